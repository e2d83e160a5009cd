"""Declarations beside each settings field: the command-line flag that sets it (``Cli``) and the range
``tune`` may search (``Search``). They ride on the field's type (``Annotated[int, Cli(...), Search(...)]``),
so a field's default, bounds, flag and search space are written once, in one place.

The CLI builds its options from these declarations and maps each given flag back to its field; tune
composes the stages' spaces. Cf. Olive's ``PassConfigParam(default_value, search_defaults)``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Cli:
    """How a field is set on the command line.

    ``flags``: the names ("--target", "-t"). ``parse``: turns the repeated ``NAME=VALUE`` values into the
    field's value. ``repeat``: the flag may be given several times (a list). ``switch``: a flag without a
    value that sets the field to ``switch`` (``--no-simplify`` sets simplify to False). ``negative``: the
    off-flag of an on/off pair (``--no-speed-fallback``). ``creates``: giving the flag creates the settings
    section it belongs to (``--ssh``, ``--prune``, ``--finetune``). ``also``: further field paths the same
    flag sets (``--threads`` times the device runs too)."""

    flags: tuple[str, ...]
    help: str
    parse: Callable[[list[str]], Any] | None = None
    repeat: bool = False
    switch: bool | None = None
    negative: str | None = None
    creates: bool = False
    also: tuple[tuple[str, ...], ...] = ()

    @property
    def name(self) -> str:
        """The option's Python name: the first long flag without dashes ("--input-shape" -> "input_shape")."""
        long = next(f for f in self.flags if f.startswith("--"))
        return long[2:].replace("-", "_")


@dataclass(frozen=True)
class Search:
    """A field's search space for ``tune``: a choice among values, or a numeric range (log-scaled for
    learning rates and regularisation strengths)."""

    kind: Literal["choice", "float", "int"]
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @staticmethod
    def choice(*values: Any) -> Search:
        return Search("choice", values=tuple(values))

    @staticmethod
    def floats(low: float, high: float, *, log: bool = False, step: float | None = None) -> Search:
        return Search("float", low=low, high=high, log=log, step=step)

    @staticmethod
    def ints(low: int, high: int, *, step: int = 1) -> Search:
        return Search("int", low=low, high=high, step=step)


@dataclass(frozen=True)
class Declared:
    path: tuple[str, ...]  # ("quantize", "min_cosine")
    field: FieldInfo
    annotation: Any  # the field's type without Optional / Annotated
    cli: Cli | None
    search: Search | None


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model of a section field (``QuantizeConfig``, ``PruneConfig | None``), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def is_optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def bare(annotation: Any) -> Any:
    """``int | None`` -> int; ``Annotated[float, ...]`` -> float."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def declared(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[Declared]:
    """Every field of ``model`` and of its sections, with its declarations."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        section = section_model(info.annotation)
        cli = next((m for m in info.metadata if isinstance(m, Cli)), None)
        search = next((m for m in info.metadata if isinstance(m, Search)), None)
        if section is not None:
            yield from declared(section, path)
            continue
        yield Declared(path, info, bare(info.annotation), cli, search)


def search_space(model: type[BaseModel]) -> dict[str, Search]:
    """``{"quantize.min_cosine": Search(...), ...}``: what tune may vary, declared beside each field."""
    return {".".join(d.path): d.search for d in declared(model) if d.search is not None}


def flag_of(model: type[BaseModel], path: tuple[Any, ...]) -> str | None:
    """The flag that sets the field at ``path`` (a pydantic error location), if any."""
    best = None
    for item in declared(model):
        if item.cli is not None and tuple(path[:len(item.path)]) == item.path:
            if best is None or len(item.path) > len(best.path):
                best = item
    return best.cli.flags[0] if best is not None else None
