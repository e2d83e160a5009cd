"""Where CLI output goes: JSON or the human summary on stdout, everything else on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Progress, warnings and errors: stderr, so `--json` stdout stays machine-readable.
err_console = Console(stderr=True, highlight=False)


def out_console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True, soft_wrap=True)
