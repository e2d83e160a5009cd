"""Where CLI output goes: JSON or the human summary on stdout, everything else on stderr."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:  # the CLI's modules import the library only when a command runs (a fast --help)
    from edgeopt.data.resolve import ResolvedInput
    from edgeopt.data.samples import InputsSummary

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


def print_inputs(console: Console, resolved: InputsSummary, layouts: dict[str, str] | None = None) -> None:
    """The run's inputs as resolved ("images=1x3x320x320 (height, width from data calib.npz)"), fills,
    stream state, and the rule each data array was read with."""
    from rich.markup import escape

    def line(entry: ResolvedInput) -> str:
        shape = "x".join(str(d) for d in entry.shape) or "scalar"
        by_source: dict[str, list[str]] = {}
        for axis, (dim, source) in enumerate(zip(entry.declared, entry.sources)):
            if source and source != "model":
                by_source.setdefault(source, []).append(f"axis {axis}" if dim == "?" else str(dim))
        told = "; ".join(f"{', '.join(dims)} from {source}" for source, dims in by_source.items())
        return f"{entry.name}={shape}" + (f" ({told})" if told else "")

    pairs = resolved.state_pairs
    console.print(escape("inputs: " + ", ".join(line(entry) for entry in resolved.inputs)
                         + "".join(f"; {name} filled with {fill.value}" for name, fill in resolved.fills.items())
                         + (f"; stream state {', '.join(f'{o} → {i}' for o, i in pairs.items())}" if pairs else "")))
    for name, rule in (layouts or {}).items():
        console.print(escape(f"  data for {name}: {rule}"))


class EventLines:
    """Renders library events on a rich Progress (stderr): one line per stage or device, a bar where
    the event says how far along it is. The only place progress is drawn."""

    def __init__(self, progress: Any, default: str = "working") -> None:
        self.progress = progress
        self.tasks: dict[tuple[str, str | None], Any] = {}
        self.descriptions: dict[tuple[str, str | None], str] = {}
        self.default = default

    def _task(self, key: tuple[str, str | None]) -> Any:
        if key not in self.tasks:
            source, device = key
            self.descriptions[key] = f"[bold]{_escape(device)}[/bold]" if device else (source or self.default)
            self.tasks[key] = self.progress.add_task(self.descriptions[key], total=None)
        return self.tasks[key]

    def __call__(self, event: Any) -> None:
        key = (event.source, event.device)
        if event.kind == "started":
            self.descriptions[key] = _escape(event.message)
            self.tasks[key] = self.progress.add_task(self.descriptions[key], total=1)
            return
        task = self._task(key)
        base = self.descriptions[key]
        if event.kind == "finished":
            self.progress.update(task, completed=1, total=1, description=f"{base} [{_escape(event.message)}]")
        elif event.kind == "note":
            self.progress.update(task, description=f"{base}: {_escape(event.message)}")
        elif event.kind == "progress":
            self.progress.update(task, completed=event.done, total=max(event.total or 1, 1),
                                 description=f"{base}: {_escape(event.message)}" if event.message else base)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
