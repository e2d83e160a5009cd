"""The search space of `edgeopt tune`: composed from what each stage declares about its own settings
(``Search`` beside the field in config/settings.py), for the stages the run uses, then narrowed or widened
by ``[tune.space]``.

A ``[tune.space]`` entry names a settings field by its dotted path (or ``factory.NAME``, a keyword argument of a
factory source: each value builds another architecture, trained from scratch on the fine-tuning data) and gives:
- ``{low = 0.2, high = 0.6, step = 0.1}`` (``log = true`` for rates): a numeric range;
- ``[ "minmax", "percentile" ]`` or ``{values = [...]}``: a choice;
- ``"search"``: the range the stage declares for it;
- any other value: fixed for every trial (taken out of the search).
Every value is checked against the field itself (a ratio of 1.5 is refused here, not in trial 7), and a bad
entry is one line naming the file, line and key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edgeopt.config.declare import Search, declared
from edgeopt.config.settings import ConvertConfig
from edgeopt.errors import InputError

RANGE_KEYS = {"low", "high", "step", "log", "values"}

# Searched by default when the run uses the stage (others join through [tune.space]; their declared ranges
# are wide, and a space that silently balloons wastes the trial budget).
DEFAULT_QUANTIZE = ("quantize.activation_type", "quantize.per_channel", "quantize.calibration_method")
DEFAULT_PRUNE = ("prune.ratio", "prune.criterion")
DEFAULT_FINETUNE = ("finetune.lr", "finetune.weight_decay")


@dataclass(frozen=True)
class Dimension:
    path: str  # "prune.ratio"
    kind: str  # choice | float | int
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def distribution(self) -> Any:
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log,
                                                      step=None if self.log else self.step)

    def grid(self) -> list[Any] | None:
        """Every value, where the dimension is discrete (None: a continuous range)."""
        if self.kind == "choice":
            return list(self.values)
        if self.step is None or self.log:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(round(v)) for v in values] if self.kind == "int" else [round(v, 10) for v in values]

    def describe(self) -> str:
        if self.kind == "choice":
            return "{" + ", ".join(map(str, self.values)) + "}"
        step = f" step {self.step:g}" if self.step and not self.log else ""
        return f"{self.low:g}..{self.high:g}{' log' if self.log else ''}{step}"


@dataclass(frozen=True)
class Space:
    dimensions: tuple[Dimension, ...]
    fixed: Mapping[str, Any]  # path -> value for every trial

    def size(self) -> int | None:
        """Configurations in the space; None when a dimension is continuous."""
        total = 1
        for dim in self.dimensions:
            grid = dim.grid()
            if grid is None:
                return None
            total *= len(grid)
        return total

    def describe(self) -> str:
        size = self.size()
        count = f"{size} configurations" if size is not None else "continuous"
        parts = [f"{d.path} {d.describe()}" for d in self.dimensions]
        return f"{len(self.dimensions)} dimension(s), {count}: " + "; ".join(parts)

    def grid(self) -> dict[str, list[Any]]:
        table = {}
        for dim in self.dimensions:
            values = dim.grid()
            if values is None:
                raise InputError(f"the grid sampler needs discrete values, and {dim.path} is a continuous range",
                                 f"give {dim.path} a step (or a list of values) in [tune.space], or use "
                                 "--sampler tpe")
            table[dim.path] = values
        return table


def _field_table() -> dict[str, Any]:
    return {".".join(d.path): d for d in declared(ConvertConfig)}


FACTORY = "factory."  # "factory.width": a keyword argument of a factory source (ConvertConfig.factory_args)


def apply(base: ConvertConfig, values: Mapping[str, Any]) -> ConvertConfig:
    """``base`` with each dotted path set; a section the path enters is created when absent (--prune's);
    ``factory.NAME`` sets the factory's keyword argument NAME."""
    data = base.model_dump()
    for path, value in values.items():
        if path.startswith(FACTORY):
            data["factory_args"] = {**data.get("factory_args", {}), path[len(FACTORY):]: value}
            continue
        node = data
        parts = path.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return ConvertConfig.model_validate(data)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"prune": {"ratio": {...}}}`` (TOML dotted keys and sub-tables) → ``{"prune.ratio": {...}}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not (set(value) & RANGE_KEYS):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def build_space(base: ConvertConfig, entries: Mapping[str, Any],
                error: Callable[[str, str, str], Exception] | None = None) -> Space:
    """The space for a run configured as ``base``: the default dimensions of the stages it uses, then the
    ``[tune.space]`` ``entries``. ``error(key, message, hint)`` builds the exception for a bad entry (the
    project file's file:line: key form); default an InputError naming the key."""
    def fail(key: str, message: str, hint: str) -> Exception:
        return error(key, message, hint) if error else InputError(f"tune.space.{key}: {message}", hint)

    fields = _field_table()
    wanted: dict[str, Search] = {}
    if base.quantize.mode != "none" and base.quantize.calib:
        wanted.update({p: fields[p].search for p in DEFAULT_QUANTIZE})
    if base.prune is not None:  # pruning joins when the run prunes (or when [tune.space] names prune.*)
        wanted.update({p: fields[p].search for p in DEFAULT_PRUNE})
    if base.finetune is not None:
        wanted.update({p: fields[p].search for p in DEFAULT_FINETUNE})
    dims: dict[str, Dimension] = {p: _from_search(p, s) for p, s in wanted.items()}
    fixed: dict[str, Any] = {}
    for key, value in _flatten(entries).items():
        if key.startswith(FACTORY):
            _factory_entry(base, key, value, dims, fixed, fail)
            continue
        item = fields.get(key)
        if item is None or key in ("source", "output_dir") or key.split(".")[0] not in _SEARCHABLE_SECTIONS:
            searchable = sorted(k for k, d in fields.items() if d.search is not None)
            raise fail(key, "not a setting tune can vary",
                       "searchable: " + ", ".join(searchable) + " (and any other quantize.*, prune.*, finetune.* "
                       "setting with values or a range)")
        if key.startswith("finetune.") and base.finetune is None:
            raise fail(key, "fine-tuning settings need fine-tuning data", "pass --finetune DATA (or "
                       "[pipeline.finetune] data = ...)")
        dims.pop(key, None)
        if value == "search":
            if item.search is None:
                raise fail(key, "declares no range of its own", "give values or {low, high} for it")
            dims[key] = _from_search(key, item.search)
        elif isinstance(value, list) or (isinstance(value, Mapping) and "values" in value):
            values = list(value["values"] if isinstance(value, Mapping) else value)
            if not values:
                raise fail(key, "an empty list of values", "list at least one value, or remove the entry")
            for candidate in values:
                _check_value(base, key, candidate, fail)
            dims[key] = Dimension(key, "choice", values=tuple(values))
        elif isinstance(value, Mapping):
            dims[key] = _range(base, key, value, item.annotation, fail)
        else:
            _check_value(base, key, value, fail)
            fixed[key] = value
    return Space(tuple(dims.values()), fixed)


_SEARCHABLE_SECTIONS = ("quantize", "prune", "finetune")


def _factory_entry(base: ConvertConfig, key: str, value: Any, dims: dict[str, Dimension], fixed: dict[str, Any],
                   fail: Callable[[str, str, str], Exception]) -> None:
    """An architecture dimension: a keyword argument the factory takes, with values or a numeric range."""
    from edgeopt.formats.sources import is_factory_spec
    from edgeopt.formats.torch import factory_parameters

    name = key[len(FACTORY):]
    if not is_factory_spec(base.source):
        raise fail(key, "factory arguments need a factory source (pkg.module:function or file.py:function)",
                   "tune a model given as its factory, or drop the factory.* entries")
    named, anything = factory_parameters(base.source)
    if not anything and name not in named:
        raise fail(key, f"the factory takes no argument {name!r}", f"its arguments: {', '.join(sorted(named))}")
    if base.weights:
        raise fail(key, "a factory argument builds another architecture, which --weights does not fit",
                   "drop --weights: each architecture is trained from scratch on the --finetune data")
    if base.finetune is None:
        raise fail(key, "each architecture is trained from scratch, and there is no training data",
                   "pass --finetune DATA (or [pipeline.finetune] data = ...)")
    if isinstance(value, list) or (isinstance(value, Mapping) and "values" in value):
        values = list(value["values"] if isinstance(value, Mapping) else value)
        if not values:
            raise fail(key, "an empty list of values", "list at least one value, or remove the entry")
        dims[key] = Dimension(key, "choice", values=tuple(values))
    elif isinstance(value, Mapping):
        low, high = value.get("low"), value.get("high")
        kind = int if all(isinstance(v, int) and not isinstance(v, bool)
                          for v in (low, high, value.get("step", 1))) else float
        dims[key] = _range(base, key, value, kind, fail, check=False)
    else:
        fixed[key] = value


def _from_search(path: str, search: Search) -> Dimension:
    return Dimension(path, search.kind, values=search.values, low=search.low, high=search.high, log=search.log,
                     step=search.step)


def _check_value(base: ConvertConfig, key: str, value: Any, fail: Callable[[str, str, str], Exception]) -> None:
    try:
        apply(base, {key: value})
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise fail(key, f"{value!r} is not a valid value: {message}", "see the field's flag in edgeopt convert --help"
                   ) from None


def _range(base: ConvertConfig, key: str, value: Mapping[str, Any], annotation: Any,
           fail: Callable[[str, str, str], Exception], check: bool = True) -> Dimension:
    unknown = sorted(set(value) - RANGE_KEYS)
    if unknown:
        raise fail(key, f"unknown range key(s) {', '.join(unknown)}", "a range is {low, high, step, log}")
    if "low" not in value or "high" not in value:
        raise fail(key, "a range needs low and high", f"e.g. {key} = {{low = 0.2, high = 0.6}}")
    low, high = value["low"], value["high"]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not low < high:
        raise fail(key, f"low ({low!r}) must be a number below high ({high!r})", "swap or fix them")
    if annotation not in (int, float):
        raise fail(key, "a range applies to numeric settings only", "list the values instead")
    step, log = value.get("step"), bool(value.get("log", False))
    if step is not None and (not isinstance(step, (int, float)) or step <= 0 or step > high - low):
        raise fail(key, f"step {step!r} must be positive and at most high - low", "fix the step")
    if log and low <= 0:
        raise fail(key, "a log range needs low > 0", "raise low, or drop log")
    for bound in (low, high) if check else ():
        _check_value(base, key, int(bound) if annotation is int else float(bound), fail)
    kind = "int" if annotation is int else "float"
    return Dimension(key, kind, low=float(low), high=float(high), log=log,
                     step=float(step) if step is not None else (1.0 if kind == "int" else None))
