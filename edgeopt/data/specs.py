"""What a model's inputs look like, and the flags that describe them.

``InputSpec`` is one input: a name, a shape whose dims are sizes (int) or symbolic (a name such as
``"batch"``, or ``"?"`` when unnamed), and a numpy dtype name. Exporters write "any size" in
several ways (a ``dim_param``, no value at all, ``-1`` from paddle2onnx, ``0``): ``declared_dim``
turns all of them into the one symbolic form, so nothing downstream treats ``-1`` as a size.

The flag syntaxes live here too: ``--input-shape NAME=1x3x224x224``, ``--input-dtype NAME=int64``,
``--dim NAME=SIZE`` (a named symbolic dim, in every input that uses it), ``--fill NAME=zeros|ones|VALUE``
(an input the data lacks) and ``--state-pair OUTPUT=INPUT`` (a stream's recurrent state).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

from edgeopt.errors import InputError

Dim = Union[int, str]  # str: a symbolic dim's name, or "?" when unnamed
UNNAMED = "?"

SUPPORTED_DTYPES = frozenset({
    "float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "bool",
})


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name: "float32", "int64", ...
    # an integer input with a scale (a fully int8 TFLite model's image): a real-valued signal, not an index
    quantized: bool = False

    @property
    def is_concrete(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)

    @property
    def is_integer(self) -> bool:
        """Integer and bool inputs select code paths (token ids, sample rates, indices, masks):
        they are never given random values."""
        return not self.quantized and (self.dtype == "bool" or self.dtype.startswith(("int", "uint")))

    def describe(self) -> str:
        return f"{self.name}={format_shape(self.shape)}:{self.dtype}"


def numpy_dtype(name: str):
    """The numpy dtype that feeds an input of dtype ``name`` (numpy has no bfloat16: float32)."""
    import numpy as np

    return np.dtype("float32" if name == "bfloat16" else name)


def require_concrete(specs, what: str) -> list[InputSpec]:
    """``specs`` unchanged when every dim has a size; else an InputError (data.resolve sizes every dim,
    so a symbolic one here means a caller skipped it)."""
    unresolved = [s.describe() for s in specs if not s.is_concrete]
    if unresolved:
        raise InputError(f"{what} needs concrete input shapes, got {', '.join(unresolved)}",
                         "give the symbolic dims a size: --dim NAME=SIZE or --input-shape NAME=DIMS")
    return list(specs)


def declared_dim(value: object) -> Dim:
    """One declared dim as a size or a symbolic name: positive ints are sizes; a name stays a name;
    ``-1``, ``0``, ``None`` and ``""`` (how exporters write "any size") become ``"?"``."""
    if isinstance(value, bool):
        return UNNAMED
    if isinstance(value, int):
        return value if value > 0 else UNNAMED
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.isdigit() and int(text) > 0 else text
    return UNNAMED


def is_symbolic(dim: Dim) -> bool:
    return not (isinstance(dim, int) and dim > 0)


def format_shape(shape: tuple[Dim, ...] | list[Dim]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


# A symbolic axis 0 is a batch axis unless its name says it counts something else: a model whose
# input is [time, features] has no batch axis, and its data needs a separate sample axis.
_NOT_A_BATCH = re.compile(r"time|seq|len|step|frame|token|sample|chunk|height|width|feat|chan|"
                          r"^[hwtlckm]$|^n_?fft$|^words?$|^chars?$", re.IGNORECASE)


def is_batch_axis(spec: InputSpec, axis: int = 0) -> bool:
    """Whether ``axis`` of ``spec`` counts independent samples: only axis 0, and only when it is
    symbolic with an unnamed or batch-like name ("batch", "N", "unk__12", "DynamicDimension.0")."""
    if axis != 0 or not spec.shape or not is_symbolic(spec.shape[0]):
        return False
    name = str(spec.shape[0])
    return name == UNNAMED or not _NOT_A_BATCH.search(name)


def batch_axis_of(spec: InputSpec, peers: list[InputSpec] | tuple[InputSpec, ...] = ()) -> int | None:
    """Where ``spec`` counts samples: axis 0 when it is a batch axis, else the axis that shares the name of
    another input's batch axis (recurrent state ``[layers, batch, hidden]`` beside ``x[batch, ...]``)."""
    if is_batch_axis(spec):
        return 0
    names = {str(p.shape[0]) for p in peers if is_batch_axis(p) and p.shape[0] != UNNAMED}
    return next((axis for axis, dim in enumerate(spec.shape) if isinstance(dim, str) and dim in names), None)


# ---------------------------------------------------------------------------------------------
# Flags

_SHAPE_RE = re.compile(r"^(?:(?P<name>[^=]+)=)?(?P<dims>scalar|\d+(?:x\d+)*)$")


def parse_input_shapes(specs: list[str] | None) -> dict[str | None, tuple[int, ...]]:
    """``NAME=1x3x224x224`` (or ``1x3x224x224`` for a single-input model); ``NAME=scalar`` is a
    0-d input. The key None means "the only input"."""
    shapes: dict[str | None, tuple[int, ...]] = {}
    for raw in specs or []:
        name_part, sep, dims_part = raw.strip().rpartition("=")
        # only the dims are normalised ("1X3,224" -> "1x3x224"): an input may well be called "X"
        text = name_part + sep + dims_part.replace("X", "x").replace(",", "x")
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
        if not sep or not name.strip() or dtype not in SUPPORTED_DTYPES:
            raise InputError(
                f"bad --input-dtype {raw!r}: expected NAME=DTYPE",
                f"DTYPE is one of {', '.join(sorted(SUPPORTED_DTYPES))}",
            )
        dtypes[name.strip()] = dtype
    return dtypes


def parse_dims(specs: list[str] | dict[str, object] | None) -> dict[str, int]:
    """``--dim seq=128 --dim height=320`` (or a ``{name = size}`` table): sizes of named symbolic dims."""
    items = _items(specs, "--dim", "seq=128")
    dims: dict[str, int] = {}
    for name, value in items:
        size = value if isinstance(value, int) and not isinstance(value, bool) else \
            int(value) if isinstance(value, str) and value.strip().isdigit() else None
        if not name or size is None or size < 1:
            raise InputError(f"bad --dim {name}={value}: the size must be a positive integer", "e.g. --dim seq=128")
        if name in dims and dims[name] != size:
            raise InputError(f"--dim {name} given twice ({dims[name]} and {size})", "give each dim once")
        dims[name] = size
    return dims


@dataclass(frozen=True)
class Fill:
    """The value of an input the data lacks: zeros, ones, or one number everywhere."""

    value: float | int
    text: str  # as the user wrote it, for reports

    def describe(self) -> str:
        return self.text


def parse_fill_value(text: object, where: str) -> Fill:
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise InputError(f"bad {where} value {text!r}", "use zeros, ones or a number, e.g. --fill sr=16000")
    word = str(text).strip().lower()
    if word in ("zeros", "zero"):
        return Fill(0, "zeros")
    if word in ("ones", "one"):
        return Fill(1, "ones")
    try:
        number = float(word)
    except ValueError:
        raise InputError(f"bad {where} value {text!r}", "use zeros, ones or a number, e.g. --fill sr=16000") from None
    if not math.isfinite(number):
        raise InputError(f"bad {where} value {text!r}: not a finite number", "e.g. --fill sr=16000")
    value: float | int = int(number) if number.is_integer() else number
    return Fill(value, str(text).strip())


def parse_fills(specs: list[str] | dict[str, object] | None) -> dict[str, Fill]:
    """``--fill state=zeros --fill sr=16000`` (or a ``{name = value}`` table)."""
    items = _items(specs, "--fill", "sr=16000")
    fills: dict[str, Fill] = {}
    for name, value in items:
        if name in fills:
            raise InputError(f"--fill given twice for {name!r}", "give each input once")
        fills[name] = parse_fill_value(value, f"--fill {name}")
    return fills


def parse_state_pairs(specs: list[str] | dict[str, object] | None) -> dict[str, str]:
    """``--state-pair stateN=state``: output ``stateN`` feeds input ``state`` on the next call."""
    items = _items(specs, "--state-pair", "stateN=state")
    pairs: dict[str, str] = {}
    for output, value in items:
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"bad --state-pair {output}={value!r}: expected OUTPUT=INPUT", "e.g. stateN=state")
        if output in pairs:
            raise InputError(f"--state-pair given twice for output {output!r}", "pair each output once")
        pairs[output] = value.strip()
    if len(set(pairs.values())) != len(pairs):
        raise InputError("two state outputs feed the same input", "pair each state input with one output")
    return pairs


def _items(specs: list[str] | dict[str, object] | None, flag: str, example: str) -> list[tuple[str, object]]:
    """NAME=VALUE flags (repeated) or a TOML table, as (name, value) pairs."""
    if isinstance(specs, dict):
        return list(specs.items())
    return [_split(raw, flag, example) for raw in specs or []]


def _split(raw: str, flag: str, example: str) -> tuple[str, str]:
    name, sep, value = str(raw).partition("=")
    if not sep or not name.strip() or not value.strip():
        raise InputError(f"bad {flag} {raw!r}: expected NAME=VALUE", f"e.g. {flag} {example}")
    return name.strip(), value.strip()
