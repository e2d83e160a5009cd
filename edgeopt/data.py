"""Model input descriptions, the --input-shape / --input-dtype syntax, and sample inputs."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgeopt.errors import InputError

Dim = int | str  # str: a symbolic dim name ("batch") or "?" when unnamed


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name: "float32", "int64", ...

    @property
    def is_concrete(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    def describe(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.name}={dims}:{self.dtype}"


_SHAPE_RE = re.compile(r"^(?:(?P<name>[^=]+)=)?(?P<dims>scalar|\d+(?:x\d+)*)$")
_SUPPORTED_DTYPES = {
    "float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "bool",
}


def parse_input_shapes(specs: list[str] | None) -> dict[str | None, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224`` (or ``1x3x224x224`` for a single-input model).

    ``NAME=scalar`` describes a 0-d input. The key None means "the only input".
    """
    shapes: dict[str | None, tuple[int, ...]] = {}
    for raw in specs or []:
        text = raw.strip().replace("X", "x").replace(",", "x")
        match = _SHAPE_RE.match(text)
        if not match:
            raise InputError(
                f"bad --input-shape {raw!r}: expected NAME=DIMxDIM..., e.g. image=1x3x224x224",
                "use positive integers joined by 'x'; NAME=scalar for a 0-d input",
            )
        name = match.group("name")
        name = name.strip() if name else None
        dims_text = match.group("dims")
        dims = () if dims_text == "scalar" else tuple(int(d) for d in dims_text.split("x"))
        if any(d <= 0 for d in dims):
            raise InputError(f"bad --input-shape {raw!r}: dimensions must be >= 1", "e.g. image=1x3x224x224")
        if name in shapes:
            raise InputError(f"--input-shape given twice for {name or 'the input'}", "give each input once")
        shapes[name] = dims
    if None in shapes and len(shapes) > 1:
        raise InputError(
            "an unnamed --input-shape can only be used alone",
            "name every input when giving several: NAME=1x3x224x224",
        )
    return shapes


def parse_input_dtypes(specs: list[str] | None) -> dict[str, str]:
    dtypes: dict[str, str] = {}
    for raw in specs or []:
        name, sep, dtype = raw.partition("=")
        dtype = dtype.strip().lower()
        if not sep or not name.strip() or dtype not in _SUPPORTED_DTYPES:
            raise InputError(
                f"bad --input-dtype {raw!r}: expected NAME=DTYPE",
                f"DTYPE is one of {', '.join(sorted(_SUPPORTED_DTYPES))}",
            )
        dtypes[name.strip()] = dtype
    return dtypes


def resolve_input_specs(
    declared: list[InputSpec],
    shapes: dict[str | None, tuple[int, ...]],
    dtypes: dict[str, str] | None = None,
    default_dim: int = 1,
) -> list[InputSpec]:
    """Give every input a concrete shape: the user's, else the declared one with
    symbolic dims set to ``default_dim``. Conflicts are input errors."""
    names = [spec.name for spec in declared]
    shapes = dict(shapes)
    if None in shapes:
        if len(declared) != 1:
            raise InputError(
                f"the model has {len(declared)} inputs ({', '.join(names)}); an unnamed --input-shape is ambiguous",
                "name the input: --input-shape NAME=DIMS",
            )
        shapes[names[0]] = shapes.pop(None)
    for unknown in [n for n in shapes if n not in names]:
        raise InputError(
            f"--input-shape names unknown input {unknown!r}",
            f"the model's inputs are: {', '.join(names) or '(none)'}",
        )
    for unknown in [n for n in (dtypes or {}) if n not in names]:
        raise InputError(
            f"--input-dtype names unknown input {unknown!r}",
            f"the model's inputs are: {', '.join(names) or '(none)'}",
        )
    resolved = []
    for spec in declared:
        dtype = (dtypes or {}).get(spec.name, spec.dtype)
        if spec.name in shapes:
            given = shapes[spec.name]
            if spec.shape and len(given) != len(spec.shape):
                raise InputError(
                    f"--input-shape for {spec.name!r} has rank {len(given)} but the model expects rank "
                    f"{len(spec.shape)} ({_fmt(spec.shape)})",
                    f"give {len(spec.shape)} dimensions",
                )
            for axis, (want, got) in enumerate(zip(spec.shape, given)):
                if isinstance(want, int) and want > 0 and want != got:
                    raise InputError(
                        f"--input-shape {spec.name}={_fmt(given)} conflicts with the model: axis {axis} is fixed "
                        f"to {want} ({_fmt(spec.shape)})",
                        "only symbolic dimensions can be chosen",
                    )
            resolved.append(InputSpec(spec.name, tuple(given), dtype))
        else:
            dims = tuple(d if isinstance(d, int) and d > 0 else default_dim for d in spec.shape)
            resolved.append(InputSpec(spec.name, dims, dtype))
    return resolved


def _fmt(shape: tuple[Dim, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def random_inputs(specs: list[InputSpec], seed: int, batch: int | None = None) -> dict[str, np.ndarray]:
    """Reproducible sample inputs. Integer inputs stay in {0, 1}: valid token ids,
    masks and indices for any vocabulary; floats are standard normal."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = tuple(int(d) for d in spec.shape)
        if batch is not None and shape:
            shape = (batch, *shape[1:])
        if spec.dtype == "bool":
            feeds[spec.name] = np.asarray(rng.integers(0, 2, size=shape), dtype=bool)
        elif np.issubdtype(np.dtype(_np_name(spec.dtype)), np.integer):
            feeds[spec.name] = np.asarray(rng.integers(0, 2, size=shape), dtype=spec.dtype)
        else:
            feeds[spec.name] = np.asarray(rng.standard_normal(size=shape), dtype=_np_name(spec.dtype))
    return feeds


def _np_name(dtype: str) -> str:
    # numpy has no bfloat16; sample in float32 and let the caller cast where needed.
    return "float32" if dtype == "bfloat16" else dtype
