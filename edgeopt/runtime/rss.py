"""This process's memory as the kernel counts it: resident size now, the peak over a window of work (a
stage), and what the machine has available.

On Linux a window's peak is its own: writing "5" to ``/proc/self/clear_refs`` resets the high-water mark
(``VmHWM``) to the current RSS, so ``VmHWM`` at the window's end is the highest RSS inside the window.
Linux reads ``ru_maxrss`` from the same mark, so once a window has reset it, ``ru_maxrss`` is no longer a
lifetime maximum for this process. Where the mark cannot be reset (macOS, sandboxes without
``clear_refs``), a window's peak is ``ru_maxrss`` at its end: the process's peak so far, which may predate
the window. ``PeakWindow.scope`` says which of the two a figure is ("stage" or "process").
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Scope = Literal["stage", "process"]

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_MEMINFO = "/proc/meminfo"


def _status_kib(key: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int:
    """The high-water mark since the last reset (``VmHWM``), else ``ru_maxrss``."""
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else _ru_maxrss_bytes()


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo: what can be allocated without swapping (None off Linux)."""
    try:
        with open(_MEMINFO, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclass
class PeakWindow:
    """One measured window. ``peak_bytes`` and ``increase_bytes`` are set when it closes."""

    scope: Scope
    start_rss: int | None
    start_peak: int
    seen: int = 0  # the highest mark read so far, kept across resets by nested windows
    peak_bytes: int | None = None
    increase_bytes: int | None = None


_open_windows: list[PeakWindow] = []


@contextlib.contextmanager
def peak_window() -> Iterator[PeakWindow]:
    """Measure the peak RSS of the work inside the ``with``. Windows nest: an inner window's reset first
    folds the mark into every open window, so an outer one still sees the inner peak."""
    mark = peak_rss_bytes()
    for window in _open_windows:
        window.seen = max(window.seen, mark)
    reset = _reset_peak()
    start_rss = current_rss_bytes()
    window = PeakWindow(scope="stage" if reset else "process", start_rss=start_rss, start_peak=peak_rss_bytes())
    _open_windows.append(window)
    try:
        yield window
    finally:
        _open_windows.remove(window)
        mark = peak_rss_bytes()
        for outer in _open_windows:
            outer.seen = max(outer.seen, mark)
        window.peak_bytes = max(window.seen, mark)
        if window.scope == "stage":
            # what the window added at its worst over what was resident when it began
            window.increase_bytes = max(0, window.peak_bytes - (start_rss or window.peak_bytes))
        else:
            # how far it raised the process's lifetime peak (0 when it stayed under an earlier one)
            window.increase_bytes = max(0, window.peak_bytes - window.start_peak)


def release_free_memory(collect: bool = False) -> None:
    """Hand the allocator's free pages back to the kernel (glibc's ``malloc_trim``). Model protos, sessions
    and their arenas free hundreds of MB between stages, and glibc keeps freed heap resident: the next
    stage's peak would stand on it. ``collect``: first free what only reference cycles hold (a full
    ``gc.collect``, whose cost grows with every object of the process: worth it after a stage that used
    a lot of memory, not after every small one). A no-op where glibc is not the allocator."""
    if not sys.platform.startswith("linux"):
        return
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        if collect:
            import gc

            gc.collect()
        _LIBC.malloc_trim(0)


_LIBC = None
# A stage whose peak rose this much above where it started is followed by a full garbage collection.
COLLECT_AFTER_BYTES = 64 << 20
