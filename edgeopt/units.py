"""Human-friendly numbers: byte sizes and counts, both ways."""

from __future__ import annotations

import math
import re
from decimal import ROUND_FLOOR, Decimal

from edgeopt.errors import InputError

_BYTE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_NUMBER = r"(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)"
_SIZE_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[a-zA-Z]*)\s*$")
_COUNT_RE = re.compile(rf"^\s*{_NUMBER}\s*(?P<unit>[kKmMgGtT]?)\s*$")


def _exact(value: int | float | str) -> Decimal:
    """The number as written: a float goes through its shortest repr, so 32.379 stays 32.379
    (Decimal(32.379) would be 32.3789999...)."""
    return Decimal(value if isinstance(value, (int, str)) else repr(value))


def _whole(number: Decimal) -> int:
    """Limits are upper bounds on whole bytes or counts: "size <= 1228.8 B" allows exactly what
    "size <= 1228 B" allows, so the floor is the same limit, not a rounding of it."""
    return int(number.to_integral_value(rounding=ROUND_FLOOR))


def parse_bytes(text: str | int | float) -> int:
    """"4 MiB" -> 4194304, "32.379 kB" -> 32379 (exact decimal arithmetic, never through a
    float); a bare number is bytes; fractions of a byte are dropped (see ``_whole``)."""
    if isinstance(text, (int, float)):
        if isinstance(text, bool) or not math.isfinite(text):
            raise InputError(f"bad size {text!r}", "use a number of bytes, or a string like \"4 MiB\"")
        return _whole(_exact(text))
    match = _SIZE_RE.match(text)
    unit = match.group("unit").lower() if match else ""
    if not match or unit not in {"", *_BYTE_UNITS}:
        raise InputError(f"bad size {text!r}", "use a number with a unit: B, kB, MB, GB, KiB, MiB, GiB")
    return _whole(_exact(match.group("num")) * _BYTE_UNITS.get(unit, 1))


def parse_count(text: str | int | float) -> int:
    """1200000, "1.2M" -> 1200000, "800k", "3 G" (decimal multiples: MACs, parameters), exactly."""
    if isinstance(text, (int, float)):
        if isinstance(text, bool) or not math.isfinite(text):
            raise InputError(f"bad count {text!r}", "use a number, or 1.2M, 800k, 3G")
        return _whole(_exact(text))
    match = _COUNT_RE.match(text)
    if not match:
        raise InputError(f"bad count {text!r}", "use a number, or 1.2M, 800k, 3G")
    return _whole(_exact(match.group("num")) * _COUNT_UNITS[match.group("unit").lower()])


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


def format_in_unit_of(n: int | float, written: str, kind: str) -> str | None:
    """``n`` bytes (``kind`` "bytes") or units (``kind`` "count") in the unit ``written`` uses ("30.492 kB" →
    "30.493 kB"), with as many decimals as it has (two to six); None when ``written`` names no unit."""
    pattern, units = (_SIZE_RE, _BYTE_UNITS) if kind == "bytes" else (_COUNT_RE, _COUNT_UNITS)
    match = pattern.match(written)
    if not match or not match.group("unit") or match.group("unit").lower() not in units:
        return None
    number, unit = match.group("num"), match.group("unit")
    gap = written[match.end("num"):match.start("unit")]  # "160k" and "4 MiB" come back as they were written
    if units[unit.lower()] == 1:
        return f"{int(n):,}{gap}{unit}"
    written_decimals = len(number.split(".")[1]) if "." in number and "e" not in number.lower() else 0
    decimals = min(6, max(2, written_decimals))  # the exact count is shown beside it anyway
    return f"{float(n) / units[unit.lower()]:.{decimals}f}{gap}{unit}"


def plural(n: int, word: str) -> str:
    """``3 threads``, ``1 thread``: a count with its noun."""
    return f"{n} {word}{'' if n == 1 else 's'}"
