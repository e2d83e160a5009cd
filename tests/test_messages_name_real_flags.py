"""Every command-line flag an error message or hint tells the user to pass exists (issue 17: a fine-tuning hint
named `--finetune-lr`, which never existed). Scans the string parts of every `...Error(...)` call in edgeopt."""

from __future__ import annotations

import ast
import re

import typer

from conftest import REPO
from edgeopt.cli.app import app

FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]+)")
# flags of other programs that messages quote (pip), and --help
FOREIGN = {"--index-url", "--no-deps", "--help"}


def cli_flags() -> set[str]:
    flags: set[str] = set()

    def walk(command) -> None:
        for param in command.params:
            flags.update(param.opts + param.secondary_opts)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return flags


def message_flags() -> dict[str, set[str]]:
    named: dict[str, set[str]] = {}
    for path in (REPO / "edgeopt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if not func.endswith("Error"):
                continue
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    for flag in FLAG.findall(part.value):
                        named.setdefault(flag, set()).add(f"{path.relative_to(REPO)}:{node.lineno}")
    return named


def test_every_flag_a_message_names_exists():
    named = message_flags()
    assert len(named) > 10  # the scan sees the messages (a broken scan would pass vacuously)
    unknown = {flag: sorted(where) for flag, where in named.items() if flag not in cli_flags() | FOREIGN}
    assert not unknown, f"messages name flags no command has: {unknown}"
