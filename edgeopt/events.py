"""What long-running library code says while it works, as data. The CLI renders it (rich, on stderr);
the library never draws anything.

Library functions take an ``events: Events`` (default: ``Events()``, which drops everything) and call
``events.note("timing float vs int8")``, ``events.progress(3, 10, "epoch 3/10")``; a stage is bracketed
by ``started`` / ``finished``; ``scoped(source=..., device=...)`` gives a sub-task (a stage, a device
measured in parallel) its own line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["started", "finished", "note", "progress"]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    source: str  # the stage or command ("quantize", "profile", "gate"), "" at the top
    message: str = ""  # started: the description; finished: the status; note/progress: what is happening
    device: str | None = None  # a device measured in parallel has a line of its own
    done: int | None = None  # progress: units done of total (epochs, samples, rounds)
    total: int | None = None


Listener = Callable[[Event], None]


def _ignore(_event: Event) -> None:
    pass


class Events:
    """An event sink bound to a source (and a device); cheap to copy with ``scoped``."""

    def __init__(self, listener: Listener | None = None, source: str = "", device: str | None = None) -> None:
        self.listener = listener or _ignore
        self.source = source
        self.device = device

    def scoped(self, source: str | None = None, device: str | None = None) -> Events:
        return Events(self.listener, self.source if source is None else source,
                      self.device if device is None else device)

    def _emit(self, kind: EventKind, message: str = "", done: int | None = None, total: int | None = None) -> None:
        self.listener(Event(kind, self.source, message, self.device, done, total))

    def started(self, description: str) -> None:
        self._emit("started", description)

    def finished(self, status: str) -> None:
        self._emit("finished", status)

    def note(self, message: str) -> None:
        self._emit("note", message)

    def progress(self, done: int, total: int, message: str = "") -> None:
        self._emit("progress", message, done, total)
