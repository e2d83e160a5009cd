"""Loading PyTorch models from files or factories, without running untrusted pickles.

Supported sources: TorchScript archives (torch.jit.save), torch.export programs
(.pt2), a factory ``package.module:function`` / ``path/file.py:function`` plus an
optional state_dict, and (only with trust_pickle) a fully pickled nn.Module.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import (
    InputError,
    ModelLoadError,
    UnsafeInputError,
    UnsupportedFormatError,
)
from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.sources import factory_parts

_PICKLE_HINT = (
    "if you trust the file, pass --trust-pickle; safer: save a state_dict and pass a factory "
    "(edgeopt convert pkg.module:build_model --weights weights.pt), or save TorchScript / torch.export (.pt2)"
)


@dataclass
class TorchSource:
    module: Any  # torch.nn.Module, ScriptModule, or ExportedProgram
    kind: ModelFormat
    input_names: list[str]  # required positional inputs, in order
    example_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # known from the file
    example_dtypes: dict[str, str] = field(default_factory=dict)
    dynamic_dims: dict[str, list[int]] = field(default_factory=dict)  # .pt2: axes already dynamic
    description: str = ""
    optional_inputs: list[str] = field(default_factory=list)  # positional args with defaults

    def callable(self) -> Any:
        """Something to call with positional tensors to get the reference outputs."""
        if self.kind is ModelFormat.TORCH_EXPORT:
            return self.module.module()
        return self.module


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise UnsupportedFormatError(
            "PyTorch input needs torch, which is not installed",
            "install the extra: pip install -c constraints.txt 'edgeopt[torch]'",
        ) from None
    return torch


def load_torch_source(
    spec: str, fmt: ModelFormat, *, weights: Path | None = None, trust_pickle: bool = False,
    factory_args: dict[str, Any] | None = None,
) -> TorchSource:
    torch = import_torch()
    if factory_args and fmt is not ModelFormat.TORCH_FACTORY:
        raise InputError("--factory-arg only applies to a factory source (pkg.module:function)",
                         "drop --factory-arg, or pass the model's factory")
    if fmt is ModelFormat.TORCH_FACTORY:
        module = _call_factory(spec, factory_args or {})
        if weights is not None:
            _load_weights_into(module, weights, trust_pickle=trust_pickle)
        module.eval()
        required, optional = forward_arg_names(module)
        return TorchSource(module, fmt, required, description=f"factory {spec}", optional_inputs=optional)
    if weights is not None:
        raise InputError("--weights only applies to a factory source (pkg.module:function)",
                         "drop --weights, or pass the factory instead of a model file")
    path = Path(spec)
    if fmt is ModelFormat.TORCHSCRIPT:
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelLoadError(f"cannot load TorchScript archive {path}: {_line(exc)}",
                                 "re-save it with torch.jit.save") from None
        module.eval()
        names = [a.name for a in module.forward.schema.arguments[1:]]
        return TorchSource(module, fmt, names, description="TorchScript archive")
    if fmt is ModelFormat.TORCH_EXPORT:
        return _load_exported_program(path, trust_pickle)
    if fmt is ModelFormat.TORCH_PICKLE:
        return _load_pickled_module(path, trust_pickle)
    raise UnsupportedFormatError(f"{path} is not a PyTorch model", "give a .pt/.pt2 file or a factory")


@contextlib.contextmanager
def _no_arbitrary_unpickling() -> Iterator[None]:
    """Force every torch.load to weights_only and disable plain pickle.loads inside
    torch.export's archive reader, which would otherwise run code from the file."""
    import torch.export.pt2_archive._package as package

    class _RefusingPickle:
        @staticmethod
        def loads(*_args: Any, **_kwargs: Any) -> Any:
            raise UnsafeInputError("the .pt2 archive holds pickled Python objects", _PICKLE_HINT)

    previous_env = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    previous_pickle = package.pickle
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    package.pickle = _RefusingPickle  # type: ignore[assignment]
    try:
        yield
    finally:
        package.pickle = previous_pickle
        if previous_env is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous_env


# torch.export.load hands every symbolic-shape expression in the archive to sympy.sympify,
# which evaluates it as Python: only plain arithmetic over shape symbols may pass.
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_+\-*/%(), .<>=!]*$")
_EXPR_SYMBOL = re.compile(r"^[a-z]{1,3}\d+$")
_EXPR_FUNCTIONS = {
    "Max", "Min", "Abs", "Mod", "PythonMod", "FloorDiv", "CeilDiv", "CleanDiv", "IntTrueDiv", "FloatTrueDiv",
    "TruncToInt", "FloorToInt", "CeilToInt", "RoundToInt", "ToFloat", "Pow", "PowByNatural", "FloatPow",
    "floor", "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Where",
    "ModularIndexing", "Identity", "Integer", "Rational", "Float", "Symbol", "oo", "zoo", "nan", "True", "False",
    "LShift", "RShift", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or",
}


_EXPR_SYMBOL_CALL = re.compile(r"Symbol\('([a-z]{1,3}\d+)'(?:,\s*[a-z_]+=(?:True|False))*\)")


def _unsafe_expression(text: str) -> bool:
    text = _EXPR_SYMBOL_CALL.sub(lambda m: m.group(1), text)  # Symbol('s0', integer=True) -> s0
    if not _EXPR_CHARS.match(text) or "__" in text or re.search(r"[A-Za-z_)]\s*\.", text):
        return True
    return any(name not in _EXPR_FUNCTIONS and not _EXPR_SYMBOL.match(name)
               for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def _check_pt2_expressions(path: Path) -> None:
    """Refuse archives whose shape expressions are anything but arithmetic."""
    import json
    import zipfile

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str" and isinstance(value, str) and _unsafe_expression(value):
                    raise UnsafeInputError(
                        f"{path} holds a symbolic-shape expression that is not plain arithmetic "
                        f"({value[:60]!r}); torch.export.load would evaluate it as Python code",
                        "if you trust the file, pass --trust-pickle")
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".json"):
                    try:
                        walk(json.loads(archive.read(name)))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        continue  # not a document torch parses as JSON either
    except zipfile.BadZipFile:
        raise ModelLoadError(f"{path} is not a valid .pt2 archive", "re-save it with torch.export.save") from None


def _load_exported_program(path: Path, trust_pickle: bool) -> TorchSource:
    torch = import_torch()
    if not trust_pickle:
        _check_pt2_expressions(path)
    guard = contextlib.nullcontext() if trust_pickle else _no_arbitrary_unpickling()
    try:
        with guard:
            program = torch.export.load(str(path))
    except UnsafeInputError:
        raise
    except Exception as exc:
        if not trust_pickle and ("weights_only" in str(exc).lower() or "Unpickl" in type(exc).__name__):
            raise UnsafeInputError(f"{path} holds pickled Python objects beyond plain tensors", _PICKLE_HINT) from None
        raise ModelLoadError(f"cannot load torch.export program {path}: {_line(exc)}",
                             "re-save it with torch.export.save") from None
    names, shapes, dtypes, dynamic = [], {}, {}, {}
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for spec in program.graph_signature.input_specs:
        if spec.kind.name != "USER_INPUT":
            continue
        name = spec.arg.name
        names.append(name)
        value = placeholders[name].meta.get("val") if name in placeholders else None
        if value is not None and hasattr(value, "shape"):
            dims = []
            for axis, dim in enumerate(value.shape):
                if isinstance(dim, int):
                    dims.append(dim)
                else:  # a SymInt: dynamic in the program; use its hint for examples
                    dynamic.setdefault(name, []).append(axis)
                    dims.append(_sym_hint(dim))
            shapes[name] = tuple(dims)
            dtypes[name] = str(value.dtype).replace("torch.", "")
    return TorchSource(program, ModelFormat.TORCH_EXPORT, names, shapes, dtypes, dynamic,
                       description="torch.export program")


def _sym_hint(dim: Any) -> int:
    try:
        hint = dim.node.hint
        return int(hint) if hint is not None else 2
    except Exception:
        return 2


def _load_pickled_module(path: Path, trust_pickle: bool) -> TorchSource:
    torch = import_torch()
    if not trust_pickle:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
                raise UnsafeInputError(
                    f"{path} is a pickled Python object (e.g. a full nn.Module); unpickling it can run "
                    "arbitrary code, so edgeopt will not load it by default", _PICKLE_HINT) from None
            raise ModelLoadError(f"cannot read {path}: {_line(exc)}", "the file is corrupt or not a PyTorch file") from None
        if _looks_like_state_dict(obj):
            raise InputError(
                f"{path} holds only weights (a state_dict), not a model",
                f"give the model's factory: edgeopt convert pkg.module:build_model --weights {path}",
            )
        raise InputError(f"{path} does not hold a PyTorch model (found {type(obj).__name__})",
                         "give a TorchScript/.pt2 file or a factory with --weights")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle {path}: {_line(exc)}",
                             "the classes it needs must be importable (run from the project folder)") from None
    if isinstance(obj, torch.jit.ScriptModule):
        names = [a.name for a in obj.forward.schema.arguments[1:]]
        return TorchSource(obj.eval(), ModelFormat.TORCHSCRIPT, names, description="TorchScript (pickled)")
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"{path} unpickles to {type(obj).__name__}, not an nn.Module",
                         "for a state_dict pass a factory with --weights")
    obj.eval()
    required, optional = forward_arg_names(obj)
    return TorchSource(obj, ModelFormat.TORCH_PICKLE, required, description="pickled nn.Module",
                       optional_inputs=optional)


def _looks_like_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj)


def _import_factory_module(module_spec: str) -> Any:
    if module_spec.endswith(".py"):
        file = Path(module_spec)
        if not file.is_file():
            raise InputError(f"factory file not found: {file}", "check the path before the ':'")
        name = f"_edgeopt_factory_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise InputError(f"cannot import {file} as a Python module", "give a .py file")
        module = importlib.util.module_from_spec(spec)
        # Registered before it runs, as an import would: @dataclass, typing.get_type_hints and
        # pickling look their module up in sys.modules.
        sys.modules[name] = module
        sys.path.insert(0, str(file.resolve().parent))  # let the file import its siblings
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        finally:
            sys.path.remove(str(file.resolve().parent))
        return module
    # A console script does not put the working folder on sys.path; users expect it.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(module_spec)


def load_callable(spec: str, what: str = "factory") -> Any:
    """The function named by ``pkg.module:function`` or ``path/file.py:function`` (a model factory,
    a fine-tuning hook, ...); every failure is one InputError that says ``what`` it was looking for."""
    parts = factory_parts(spec)
    if parts is None:
        raise InputError(f"bad {what} {spec!r}", "use package.module:function or path/to/file.py:function")
    module_spec, func_name = parts
    try:
        module = _import_factory_module(module_spec)
    except InputError:
        raise
    except ImportError as exc:
        raise InputError(f"cannot import {what} module {module_spec!r}: {_line(exc)}",
                         "check the spelling and that it is importable from the current folder") from None
    except Exception as exc:
        raise InputError(f"importing {what} module {module_spec!r} raised {type(exc).__name__}: {_line(exc)}",
                         "fix the module, or run with --debug for the traceback") from None
    function = getattr(module, func_name, None)
    if function is None or not callable(function):
        raise InputError(f"{module_spec!r} has no callable {func_name!r}", "check the name after the ':'")
    return function


def factory_parameters(spec: str) -> tuple[set[str], bool]:
    """The keyword arguments the factory takes, and whether it takes any (``**kwargs``)."""
    import inspect

    signature = inspect.signature(load_callable(spec, "factory"))
    named = {p.name for p in signature.parameters.values()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def _call_factory(spec: str, kwargs: dict[str, Any]) -> Any:
    torch = import_torch()
    factory = load_callable(spec, "factory")
    if kwargs:
        named, anything = factory_parameters(spec)
        unknown = sorted(set(kwargs) - named) if not anything else []
        if unknown:
            raise InputError(f"factory {spec} takes no argument {', '.join(unknown)}",
                             f"its arguments: {', '.join(sorted(named)) or 'none'}")
    try:
        model = factory(**kwargs)
    except Exception as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise InputError(f"factory {spec}{f'({given})' if given else ''} raised {type(exc).__name__}: {_line(exc)}",
                         "check the factory's arguments" if kwargs else
                         "the factory must build the model with no arguments") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module",
                         "return the model instance from the factory")
    return model


def _load_weights_into(module: Any, weights: Path, *, trust_pickle: bool) -> None:
    torch = import_torch()
    if not weights.is_file():
        raise InputError(f"weights file not found: {weights}", "check the --weights path")
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            raise UnsafeInputError(f"{weights} holds pickled Python objects, not just tensors", _PICKLE_HINT) from None
        raise ModelLoadError(f"cannot read weights {weights}: {_line(exc)}", "the file is corrupt or not torch.save output") from None
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    # Training checkpoints often nest the weights one level down.
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict) and not any(
                isinstance(v, torch.Tensor) for v in state.values()):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise InputError(f"{weights} holds {type(state).__name__}, not a state_dict", "save model.state_dict()")
    try:
        result = module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise InputError(f"weights {weights} do not fit the model: {detail}",
                         "the factory must build the same architecture the weights came from") from None
    del result


def forward_arg_names(module: Any) -> tuple[list[str], list[str]]:
    """(required, optional) positional argument names of ``forward``."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return ["input"], []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p.name for p in positional if p.default is p.empty]
    optional = [p.name for p in positional if p.default is not p.empty]
    return required, optional


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:400]
