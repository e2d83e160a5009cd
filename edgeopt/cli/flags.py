"""Command-line options made from the settings' declarations (``config.declare.Cli``), and the flags a
user gave mapped back to the settings fields they set. No hand-kept table: a new setting with a ``Cli``
declaration is a new flag, with its help, in every command built from that model."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edgeopt.config.declare import Declared, declared


def _option(item: Declared) -> inspect.Parameter:
    cli = item.cli
    default = item.field.get_default(call_default_factory=True) if item.field.default is not PydanticUndefined or \
        item.field.default_factory is not None else None
    shown = f" [default: {default}]" if default not in (None, {}, [], "") and cli.switch is None else ""
    if cli.switch is not None:
        annotation: Any = bool
        option = typer.Option(False, *cli.flags, help=cli.help)
    elif cli.negative:
        annotation = bool | None
        option = typer.Option(None, f"{cli.flags[0]}/{cli.negative}", help=cli.help + shown)
    elif cli.parse is not None or cli.repeat:
        annotation = list[str]
        option = typer.Option([], *cli.flags, help=cli.help + shown,
                              metavar="NAME=VALUE" if cli.parse is not None else "VALUE")
    else:
        annotation = _scalar(item.annotation) | None
        option = typer.Option(None, *cli.flags, help=cli.help + shown)
    return inspect.Parameter(cli.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _scalar(annotation: Any) -> type:
    if get_origin(annotation) is Literal:
        return str
    return annotation if annotation in (int, float, str) else str


def with_setting_options(model: type[BaseModel], command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with one keyword option per declared flag of ``model`` added to its own parameters;
    the declared values reach it in ``**settings``."""
    hints = typing.get_type_hints(command)  # the command's own annotations may be strings (postponed)
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in inspect.signature(command).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in own}
    options = [_option(item) for item in declared(model) if item.cli is not None]
    clash = [p.name for p in options if p.name in names]
    if clash:
        raise RuntimeError(f"flag names clash with the command's own parameters: {clash}")  # a bug, caught by tests

    def wrapper(**kwargs: Any) -> Any:
        return command(**kwargs)

    wrapper.__signature__ = inspect.Signature([*own, *options])  # type: ignore[attr-defined]
    wrapper.__doc__ = command.__doc__
    wrapper.__name__ = command.__name__
    return wrapper


def given_settings(model: type[BaseModel], values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the given flags set, as a nested partial dict of ``model``'s fields, and
    {dotted field path: flag} for each (to name the flag in errors and warnings)."""
    partial: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for item in declared(model):
        cli = item.cli
        if cli is None or cli.name not in values:
            continue
        value = values[cli.name]
        if cli.switch is not None:
            if not value:
                continue
            value = cli.switch
        elif cli.parse is not None:
            if not value:
                continue
            value = cli.parse(list(value))
        elif cli.repeat:
            if not value:
                continue
            value = list(value)
        elif value is None:
            continue
        for path in (item.path, *cli.also):
            _set(partial, path, value)
            flags[".".join(path)] = cli.flags[0]
    return partial, flags


def _set(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def flags_of_sections(model: type[BaseModel]) -> dict[str, tuple[str, list[str]]]:
    """For each optional section (device, prune, finetune): the flag that creates it and its other flags."""
    sections: dict[str, tuple[str, list[str]]] = {}
    for item in declared(model):
        if item.cli is None or len(item.path) < 2:
            continue
        section = item.path[0]
        creator, others = sections.get(section, ("", []))
        if item.cli.creates:
            creator = item.cli.flags[0]
        else:
            others = [*others, item.cli.flags[0]]
        sections[section] = (creator, others)
    return {name: value for name, value in sections.items() if value[0]}


def optional_sections(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if type(None) in get_args(field.annotation)
            and any(isinstance(a, type) and issubclass(a, BaseModel) for a in get_args(field.annotation))}
