"""Finding and reading the project file: ``edgeopt.toml``, or ``[tool.edgeopt]`` in ``pyproject.toml``.

Every problem is a ``ConfigError`` (exit 2) naming the file, the line and the key, e.g.
``edgeopt.toml:14: budgets[1].max_sise: unknown key (did you mean max_size?)``: a typo must
never silently disable a budget. TOML parsers do not keep positions, so ``key_lines`` scans the
text for table headers and keys to map a key path back to its line.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edgeopt.config.settings import ConvertConfig, ProjectConfig
from edgeopt.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_FILE = "edgeopt.toml"
PYPROJECT = "pyproject.toml"

KeyPath = tuple[Any, ...]  # ("budgets", 0, "max_size"), ("pipeline", "quantize", "calib")


class ConfigError(InputError):
    """The project file is wrong: message starts with ``file:line: key``."""


@dataclass(frozen=True)
class LoadedConfig:
    path: Path  # the file read (edgeopt.toml or pyproject.toml)
    config: ProjectConfig
    lines: dict[KeyPath, int]  # key path → 1-based line (relative to [tool.edgeopt] in pyproject)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest enclosing table or key."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def budget_line(self, index: int) -> int | None:
        return self.line_of(("budgets", index))

    def resolve(self, value: str) -> Path:
        """A path from the file, relative to the file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.folder / path

    def resolve_source(self, value: str) -> str:
        """A file, or a ``pkg.module:function`` / ``file.py:function`` spec: files (the .py of a spec
        too) are relative to the config file, never the current folder; a dotted module stays."""
        from edgeopt.formats.sources import is_factory_spec

        if not is_factory_spec(value) or self.resolve(value).exists():
            return str(self.resolve(value))
        if ".py:" in value:
            file_part, _, function = value.rpartition(":")
            return f"{self.resolve(file_part)}:{function}"
        return value


def find_config(explicit: Path | None = None, start: Path | None = None) -> Path | None:
    """``--config FILE``, else ./edgeopt.toml, else ./pyproject.toml when it has [tool.edgeopt]."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise ConfigError(f"config file not found: {explicit}", "check the --config path")
        return Path(explicit)
    folder = Path(start or Path.cwd())
    if (folder / PROJECT_FILE).is_file():
        return folder / PROJECT_FILE
    pyproject = folder / PYPROJECT
    if pyproject.is_file():
        try:
            if "edgeopt" in tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}):
                return pyproject
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None  # not ours to complain about unless asked for
    return None


def load_config(path: Path) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}", "it must be UTF-8 TOML") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f"{path}:{line.group(1)}" if line else str(path)
        raise ConfigError(f"{where}: not valid TOML: {exc}", "fix the syntax (https://toml.io)") from None
    lines = key_lines(text)
    if path.name == PYPROJECT:
        tool = raw.get("tool", {})
        if not isinstance(tool, dict) or "edgeopt" not in tool:
            raise ConfigError(f"{path} has no [tool.edgeopt] table", "add one, or put the settings in edgeopt.toml")
        raw = tool["edgeopt"]
        lines = {key[2:]: line for key, line in lines.items() if key[:2] == ("tool", "edgeopt") and len(key) > 2}
        lines[()] = next((line for key, line in key_lines(text).items() if key == ("tool", "edgeopt")), 1)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a table of settings", "see the README's edgeopt.toml section")
    for section in ("prune", "finetune", "quantize", "device"):
        if section in raw:  # a pipeline setting written at the top level
            raise ConfigError(f"{path}:{lines.get((section,), '?')}: [{section}] belongs to the pipeline",
                              f"write it as [pipeline.{section}]")
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(path, lines, exc) from None
    return LoadedConfig(path, config, lines)


def _config_error(path: Path, lines: dict[KeyPath, int], exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    line = next((lines[loc[:end]] for end in range(len(loc), 0, -1) if loc[:end] in lines), None)
    where = f"{path}:{line}" if line else str(path)
    key = _key_text(loc)
    if first["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        suggestion = f" (did you mean {close[0]}?)" if close else ""
        return ConfigError(f"{where}: {key}: unknown key{suggestion}",
                           f"known keys here: {', '.join(known)}" if known else "remove it")
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "required key is missing"
    return ConfigError(f"{where}: {key or 'settings'}: {message}", "see the README's edgeopt.toml section")


def _key_text(loc: KeyPath) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _known_keys(loc: KeyPath) -> list[str]:
    """Field names of the model found at ``loc`` (for "did you mean")."""
    model: Any = ProjectConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    names = set(model.model_fields)
    for field in model.model_fields.values():  # the file's own spellings (output for output_dir)
        choices = getattr(field.validation_alias, "choices", None) or []
        names.update(c for c in choices if isinstance(c, str))
    if model is ConvertConfig:
        names.add("input_shape")
    return sorted(names)


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside ``X | None`` or ``list[X]``."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# -- positions ------------------------------------------------------------------------------------

_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*(?P<name>[^\]]+?)\s*\]\]")
_TABLE = re.compile(r"^\s*\[\s*(?P<name>[^\]]+?)\s*\]")
_KEY = re.compile(r"""^\s*(?P<key>(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _dotted(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def key_lines(text: str) -> dict[KeyPath, int]:
    """Key path → first line it appears on: table headers, ``[[array]]`` entries (with their index)
    and ``key = value`` lines. Multi-line strings and arrays are skipped over roughly (a line that
    does not start like a key or a header is ignored), which is enough to point at a key."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    counts: dict[tuple[str, ...], int] = {}
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if match := _ARRAY_TABLE.match(line):
            name = _dotted(match.group("name"))
            index = counts.get(name, 0)
            counts[name] = index + 1
            table = (*name, index)
            lines.setdefault(table, number)
            continue
        if match := _TABLE.match(line):
            table = _dotted(match.group("name"))
            lines.setdefault(table, number)
            continue
        if match := _KEY.match(line):
            lines.setdefault((*table, *_dotted(match.group("key"))), number)
            rest = line[match.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
    return lines


# -- the pipeline as a ConvertConfig -----------------------------------------------------------------

def pipeline_config(loaded: LoadedConfig, output_override: str | None = None) -> ConvertConfig:
    """``[pipeline]`` (a ``ConvertConfig``, as the CLI builds it) with its paths resolved against the file."""
    from edgeopt.data import parse_fills, parse_state_pairs
    from edgeopt.targets import load_target

    pipeline = loaded.config.pipeline
    if pipeline is None:
        raise ConfigError(f"{loaded.path}: no [pipeline] table, so there is nothing to convert",
                          'add [pipeline] with source = "model.onnx" (and calib, targets...), or pass MODEL')
    if not pipeline.source:
        raise ConfigError(f"{loaded.path}:{loaded.line_of(('pipeline',))}: pipeline.source: required key is missing",
                          'name the model to convert: source = "model.onnx" (relative to this file)')

    def resolved(value: str | None) -> str | None:
        return None if value is None else str(loaded.resolve(value))

    targets_dir = loaded.resolve(pipeline.targets_dir) if pipeline.targets_dir else None
    for name in pipeline.targets:
        try:
            load_target(name, targets_dir)
        except InputError as exc:
            line = loaded.line_of(("pipeline", "targets"))
            raise ConfigError(f"{loaded.path}:{line}: pipeline.targets: {exc.message}", exc.hint) from None
    for key, parse in (("fills", parse_fills), ("state_pairs", parse_state_pairs)):
        try:
            parse(dict(getattr(pipeline, key)))
        except InputError as exc:
            line = loaded.line_of(("pipeline", key)) or loaded.line_of(("pipeline",))
            raise ConfigError(f"{loaded.path}:{line}: pipeline.{key}: {exc.message}", exc.hint) from None
    finetune = pipeline.finetune
    if finetune is not None:
        finetune = finetune.model_copy(update={"data": loaded.resolve_source(finetune.data),
                                               "val": resolved(finetune.val)})
    device = pipeline.device
    if device is not None and device.ssh_config:
        device = device.model_copy(update={"ssh_config": resolved(device.ssh_config)})
    return pipeline.model_copy(update={
        "source": loaded.resolve_source(pipeline.source),
        "output_dir": output_override or str(loaded.resolve(pipeline.output_dir)),
        "weights": resolved(pipeline.weights), "targets_dir": resolved(pipeline.targets_dir),
        "targets": list(dict.fromkeys(pipeline.targets)),
        "quantize": pipeline.quantize.model_copy(update={"calib": resolved(pipeline.quantize.calib),
                                                         "eval": resolved(pipeline.quantize.eval)}),
        "device": device, "finetune": finetune})
