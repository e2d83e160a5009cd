"""Human-friendly numbers: byte sizes and counts, both ways."""

from __future__ import annotations

import re

from edgeopt.errors import InputError

_BYTE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[a-zA-Z]*)\s*$")


def parse_bytes(text: str | int | float) -> int:
    """"4 MiB" -> 4194304, "800 kB" -> 800000; a bare number is bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    match = _SIZE_RE.match(text)
    unit = match.group("unit").lower() if match else ""
    if not match or unit not in {"", *_BYTE_UNITS}:
        raise InputError(f"bad size {text!r}", "use a number with a unit: B, kB, MB, GB, KiB, MiB, GiB")
    return int(float(match.group("num")) * _BYTE_UNITS.get(unit, 1))


def format_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def format_count(n: int | float | None) -> str:
    """1234567 -> "1.23 M"."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("", "K", "M", "G", "T"):
        if abs(value) < 1000 or unit == "T":
            return f"{int(value)}" if unit == "" else f"{value:.2f} {unit}"
        value /= 1000
    return f"{value:.2f} T"
