"""The one input-shape resolver: every symbolic dim gets a size from a named source, never silently 1.

Order, per dim (the first that gives a size wins):

1. the model itself (a fixed size);
2. ``--input-shape NAME=...`` for that input, then ``--dim NAME=SIZE`` for a named dim (in every input
   that uses the name);
3. the data (calibration, then evaluation, then ``--inputs``): one sample's shape, per input;
   a named dim learnt from one input holds for every input that shares the name;
4. the model's metadata (``metadata_props``): a key equal to the dim's name, or ``imgsz`` for the
   last two dims of an image input (ultralytics exports);
5. a batch axis (``is_batch_axis``) is the deployment batch, 1 unless set (said in the notes).

A dim nothing gives a size is an error that names the input, the dim and the flag that fixes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgeopt.data.dataset import Dataset
from edgeopt.data.specs import (
    UNNAMED,
    Fill,
    InputSpec,
    format_shape,
    is_batch_axis,
    is_symbolic,
)
from edgeopt.errors import InputError

MODEL = "model"
INPUT_SHAPE_FLAG = "--input-shape"
DIM_FLAG = "--dim"
METADATA = "model metadata"
BATCH_DEFAULT = "deployment batch"


class ResolvedInput(BaseModel):
    """One input as the report shows it: resolved and declared shapes, and where each dim's size came from."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int | str]
    dtype: str
    declared: list[int | str]
    sources: list[str]


@dataclass(frozen=True)
class UnresolvedDim:
    input: str
    axis: int
    dim: str  # the symbolic name, or "?"
    declared: str  # the input's declared shape, e.g. "batchx3xheightxwidth"
    example: str  # the input's shape with the sizes known so far, N for the missing ones

    def describe(self) -> str:
        if self.dim != UNNAMED:
            return f"input {self.input!r} dim {self.dim!r} (axis {self.axis} of {self.declared})"
        return f"input {self.input!r} axis {self.axis} (unnamed, in {self.declared})"

    @property
    def fix(self) -> str:
        return f"--dim {self.dim}=SIZE" if self.dim != UNNAMED else f"--input-shape {self.input}={self.example}"


@dataclass(frozen=True)
class ResolvedInputs:
    """Concrete input specs and where each size came from (``sources[name][axis]``)."""

    specs: tuple[InputSpec, ...]
    declared: tuple[InputSpec, ...]
    sources: dict[str, tuple[str, ...]]
    notes: tuple[str, ...] = ()
    unresolved: tuple[UnresolvedDim, ...] = ()  # only with allow_unresolved=True
    named_dims: dict[str, int] = field(default_factory=dict)

    @property
    def shapes(self) -> dict[str, list[int]]:
        return {s.name: [int(d) for d in s.shape] for s in self.specs if s.is_concrete}

    def summary(self) -> list[ResolvedInput]:
        """Per input, for reports: the resolved shape, the declared one, and each dim's source."""
        return [ResolvedInput(name=spec.name, shape=list(spec.shape), dtype=spec.dtype, declared=list(declared.shape),
                              sources=list(self.sources.get(spec.name, ())))
                for spec, declared in zip(self.specs, self.declared)]

    def describe(self) -> str:
        """One line for the CLI: "images=1x3x320x320 (height, width from calib.npz; batch 1)"."""
        parts = []
        for spec, declared in zip(self.specs, self.declared):
            chosen = [f"{declared.shape[axis]}={spec.shape[axis]} from {source}"
                      for axis, source in enumerate(self.sources.get(spec.name, ())) if source != MODEL]
            parts.append(spec.describe() + (f" ({'; '.join(chosen)})" if chosen else ""))
        return ", ".join(parts)


def apply_user_shapes(declared: Sequence[InputSpec], shapes: Mapping[str | None, Sequence[int]] | None = None,
                      dims: Mapping[str, int] | None = None, dtypes: Mapping[str, str] | None = None,
                      *, keep_batch_free: bool = False) -> list[InputSpec]:
    """The declared specs with what the user fixed (``--input-shape``, ``--dim``, ``--input-dtype``)
    made concrete; every contradiction is an InputError. ``keep_batch_free`` leaves a batch axis
    symbolic (data of any number of samples then fits)."""
    names = [s.name for s in declared]
    shapes = dict(shapes or {})
    if None in shapes:
        if len(declared) != 1:
            raise InputError(f"the model has {len(declared)} inputs ({', '.join(names)}); an unnamed "
                             "--input-shape is ambiguous", "name the input: --input-shape NAME=DIMS")
        shapes[names[0]] = shapes.pop(None)
    for flag, given in ((INPUT_SHAPE_FLAG, shapes), ("--input-dtype", dtypes or {})):
        for unknown in [n for n in given if n not in names]:
            raise InputError(f"{flag} names unknown input {unknown!r}",
                             f"the model's inputs are: {', '.join(names) or '(none)'}")
    named = {d for s in declared for d in s.shape if isinstance(d, str) and d != UNNAMED}
    for unknown in [n for n in (dims or {}) if n not in named]:
        raise InputError(f"--dim names {unknown!r}, which is not a symbolic dim of the model",
                         f"its symbolic dims are: {', '.join(sorted(named)) or '(none)'}; "
                         "unnamed dims are set with --input-shape")
    learnt: dict[str, tuple[int, str]] = {name: (size, f"--dim {name}") for name, size in (dims or {}).items()}
    out: list[InputSpec] = []
    for spec in declared:
        given = shapes.get(spec.name)
        if given is not None:
            given = tuple(int(d) for d in given)
            if spec.shape and len(given) != len(spec.shape):
                raise InputError(f"{INPUT_SHAPE_FLAG} for {spec.name!r} has rank {len(given)} but the model expects "
                                 f"rank {len(spec.shape)} ({format_shape(spec.shape)})",
                                 f"give {len(spec.shape)} dimensions")
            for axis, (want, got) in enumerate(zip(spec.shape, given)):
                if not is_symbolic(want) and want != got:
                    raise InputError(f"{INPUT_SHAPE_FLAG} {spec.name}={format_shape(given)} conflicts with the model: "
                                     f"axis {axis} is fixed to {want} ({format_shape(spec.shape)})",
                                     "only symbolic dimensions can be chosen")
                if isinstance(want, str) and want != UNNAMED:
                    seen = learnt.setdefault(want, (got, f"{INPUT_SHAPE_FLAG} {spec.name}"))
                    if seen[0] != got:
                        raise InputError(f"dimension {want!r} is {seen[0]} by {seen[1]} but {got} by "
                                         f"{INPUT_SHAPE_FLAG} {spec.name}", "give shared dimensions one size")
    for spec in declared:
        dtype = (dtypes or {}).get(spec.name, spec.dtype)
        given = shapes.get(spec.name)
        dims_out = []
        for axis, dim in enumerate(spec.shape):
            if keep_batch_free and axis == 0 and is_batch_axis(spec):
                dims_out.append(dim)
            elif given is not None:
                dims_out.append(int(given[axis]))
            elif isinstance(dim, str) and dim in learnt:
                dims_out.append(learnt[dim][0])
            else:
                dims_out.append(dim)
        if given is not None and not spec.shape:
            dims_out = [int(d) for d in given]
        out.append(replace(spec, shape=tuple(dims_out), dtype=dtype))
    return out


def resolve_inputs(
    declared: Sequence[InputSpec],
    *,
    shapes: Mapping[str | None, Sequence[int]] | None = None,
    dims: Mapping[str, int] | None = None,
    dtypes: Mapping[str, str] | None = None,
    data: Sequence[Dataset | None] = (),
    metadata: Mapping[str, str] | None = None,
    batch: int = 1,
    allow_unresolved: bool = False,
) -> ResolvedInputs:
    """Concrete shapes for ``declared`` (the model's inputs, symbolic dims kept). See the module doc."""
    declared = [replace(s, dtype=(dtypes or {}).get(s.name, s.dtype)) for s in declared]
    user = apply_user_shapes(declared, shapes, dims, dtypes)
    shape_given = {s.name for s in declared} if None in (shapes or {}) else set(shapes or {})
    named: dict[str, tuple[int, str]] = {}  # a named dim's size and its source, learnt anywhere
    sizes: dict[str, list[int | None]] = {}
    sources: dict[str, list[str]] = {}
    for spec, fixed in zip(declared, user):
        sizes[spec.name] = [None if is_symbolic(d) else int(d) for d in fixed.shape]
        sources[spec.name] = [_first_source(spec, axis, fixed, shape_given) for axis in range(len(spec.shape))]
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and dim != UNNAMED and sizes[spec.name][axis] is not None:
                named.setdefault(dim, (sizes[spec.name][axis], sources[spec.name][axis]))
    # 3. the data, one sample's shape per input
    for dataset in data:
        if dataset is None:
            continue
        where = _data_label(dataset)
        for spec in declared:
            if spec.name not in dataset.arrays or not spec.shape:
                continue
            sample = dataset.sample_shape(spec.name)
            for axis, dim in enumerate(spec.shape):
                if sizes[spec.name][axis] is not None or not is_symbolic(dim):
                    continue
                if axis == 0 and dataset.layout_of(spec.name) == "batch":
                    continue  # a batch axis: the data's row count is not the deployment batch
                sizes[spec.name][axis], sources[spec.name][axis] = int(sample[axis]), where
                if isinstance(dim, str) and dim != UNNAMED:
                    named.setdefault(dim, (int(sample[axis]), where))
    # shared names learnt from any input; then metadata; then the batch axis
    meta = _metadata_dims(metadata or {})
    notes: list[str] = []
    unresolved: list[UnresolvedDim] = []
    for spec in declared:
        for axis, dim in enumerate(spec.shape):
            if sizes[spec.name][axis] is not None:
                continue
            if isinstance(dim, str) and dim in named:
                sizes[spec.name][axis], sources[spec.name][axis] = named[dim]
            elif isinstance(dim, str) and dim in meta:
                sizes[spec.name][axis], sources[spec.name][axis] = meta[dim], METADATA
            elif meta.get("imgsz") and len(spec.shape) == 4 and axis in (2, 3) and spec.dtype.startswith("float"):
                sizes[spec.name][axis], sources[spec.name][axis] = meta["imgsz"][axis - 2], f"{METADATA} (imgsz)"
            elif is_batch_axis(spec, axis):
                sizes[spec.name][axis], sources[spec.name][axis] = batch, BATCH_DEFAULT
                note = f"batch axis {dim!r} of {spec.name!r} set to {batch} (the deployment batch; --dim or " \
                       f"--input-shape sets another)"
                if isinstance(dim, str) and dim != UNNAMED:
                    named.setdefault(dim, (batch, BATCH_DEFAULT))
                if note not in notes:
                    notes.append(note)
            else:
                example = "x".join(str(size) if size is not None else "N" for size in sizes[spec.name])
                unresolved.append(UnresolvedDim(spec.name, axis, str(dim), format_shape(spec.shape), example))
    if unresolved and not allow_unresolved:
        listed = "; ".join(u.describe() for u in unresolved)
        fixes = sorted({u.fix for u in unresolved})
        raise InputError(f"no size for {listed}: neither the flags, the data nor the model's metadata give one",
                         f"pass {' and '.join(fixes)}, or data holding that input (--calib/--eval/--inputs)")
    specs = tuple(replace(s, shape=tuple(d if d is not None else s.shape[a] for a, d in enumerate(sizes[s.name])))
                  for s in declared)
    return ResolvedInputs(specs, tuple(declared), {k: tuple(v) for k, v in sources.items()}, tuple(notes),
                          tuple(unresolved), {k: v[0] for k, v in named.items()})


def _first_source(spec: InputSpec, axis: int, fixed: InputSpec, shape_given: set[str]) -> str:
    dim = spec.shape[axis]
    if not is_symbolic(dim):
        return MODEL
    if is_symbolic(fixed.shape[axis]):
        return ""
    return INPUT_SHAPE_FLAG if spec.name in shape_given else f"{DIM_FLAG} {dim}"


def _data_label(dataset: Dataset) -> str:
    """"data calib.npz" from a source like "/path/calib.npz (.npz) [split 0.2 seed 0: 38 kept]"."""
    where = dataset.source.split(" [")[0].split(" (")[0].rstrip("/")
    return "data " + (Path(where).name or where)


def _metadata_dims(metadata: Mapping[str, str]) -> dict[str, object]:
    """Sizes a model's metadata states: ``{dim name: "320"}``, and ultralytics' ``imgsz: [640, 640]``."""
    found: dict[str, object] = {}
    for key, value in metadata.items():
        text = str(value).strip()
        if key == "imgsz":  # "640", "[640, 640]": (height, width)
            numbers = [int(n) for n in re.findall(r"\d+", text)]
            if len(numbers) in (1, 2) and all(n > 0 for n in numbers):
                found["imgsz"] = (numbers[0], numbers[-1])
        elif text.isdigit() and int(text) > 0:
            found[key] = int(text)
    return found


def fill_plan(declared: Sequence[InputSpec], resolved: ResolvedInputs, datasets: Sequence[Dataset | None],
              fills: Mapping[str, Fill]) -> tuple[dict[str, tuple[Fill, str]], list[str]]:
    """The value of every input the data lacks: an explicit ``--fill``, else zeros for a float input
    (with a warning); an integer input (ids, sample rates, indices) without data or a fill is refused
    by name. Returns ({input: (fill, reason)}, warnings)."""
    names = [s.name for s in declared]
    for unknown in [n for n in fills if n not in names]:
        raise InputError(f"--fill names unknown input {unknown!r}", f"the model's inputs are: {', '.join(names)}")
    for spec in declared:
        if spec.name in fills:
            _check_fill(spec, fills[spec.name])
    present = [d for d in datasets if d is not None]
    chosen: dict[str, tuple[Fill, str]] = {}
    warnings: list[str] = []
    for spec in resolved.specs:
        lacking = [d for d in present if spec.name not in d.arrays]
        if spec.name in fills:
            chosen[spec.name] = (fills[spec.name], "--fill")
            continue
        if not present or not lacking:
            continue
        if spec.is_integer:
            raise InputError(
                f"input {spec.name!r} ({spec.dtype}) is not in the data ({_data_label(lacking[0])[5:]}), and "
                "integer inputs are never given random values (token ids, sample rates and indices select code paths)",
                f"add {spec.name!r} to the data, or give its value: --fill {spec.name}=VALUE")
        chosen[spec.name] = (Fill(0, "zeros"), "default: zeros for a float input the data lacks")
        warnings.append(f"input {spec.name!r} is not in the data: fed zeros (recurrent state?); "
                        f"--fill {spec.name}=VALUE sets another value")
    return chosen, warnings


def _check_fill(spec: InputSpec, fill: Fill) -> None:
    """A fill must be a value of the input's dtype: whole numbers in range for integers, 0 or 1 for bools."""
    import numpy as np

    from edgeopt.data.specs import numpy_dtype

    value = fill.value
    if spec.dtype == "bool":
        if value not in (0, 1):
            raise InputError(f"--fill {spec.name}={fill.text}: {spec.name!r} is bool", "give 0, 1, zeros or ones")
        return
    if not spec.is_integer:
        return
    if not float(value).is_integer():
        raise InputError(f"--fill {spec.name}={fill.text}: {spec.name!r} is {spec.dtype} and takes whole numbers",
                         f"e.g. --fill {spec.name}={int(value)}")
    info = np.iinfo(numpy_dtype(spec.dtype))
    if not info.min <= int(value) <= info.max:
        raise InputError(f"--fill {spec.name}={fill.text}: outside the range of {spec.dtype} "
                         f"({info.min} to {info.max})",
                         f"give a value that fits {spec.dtype}")


def metadata_dict(model_metadata: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``metadata_props`` as a dict (later keys win), values trimmed; JSON lists kept as text."""
    out: dict[str, str] = {}
    for key, value in model_metadata:
        try:
            parsed = json.loads(value)
            out[key] = value if not isinstance(parsed, (int, str)) else str(parsed)
        except (ValueError, TypeError):
            out[key] = value
    return out
