"""The latency rule for shipping int8 where it is timed (``-t host``, ``--ssh``), and its words.

int8 ships when its measured latency is at most ``1 - min_speedup`` of float's (``--min-speedup``, default 5%:
smaller gains are within run-to-run noise on a shared machine). The ONNX search and the int8 TFLite stage
share it, so both say the same thing in the same words.
"""

from __future__ import annotations


def fast_enough(latency_ratio: float, min_speedup: float) -> bool:
    """int8 at ``latency_ratio`` of float's latency is at least ``min_speedup`` faster."""
    return latency_ratio <= 1 - min_speedup + 1e-9


def percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


def describe_ratio(latency_ratio: float, of: str = "float") -> str:
    """"0.954x of float, 4.6% faster" / "1.080x of float, 8.0% slower": the ratio and what it means in words."""
    return f"{latency_ratio:.3f}x of {of}, {describe_change(latency_ratio)}"


def describe_change(latency_ratio: float) -> str:
    """"4.6% faster", "8.0% slower" or "the same speed" for a latency ratio."""
    change = 1 - latency_ratio
    if abs(change) < 0.0005:
        return "the same speed"
    return f"{abs(change) * 100:.1f}% {'faster' if change > 0 else 'slower'}"


def speed_refusal(latency_ratio: float, min_speedup: float, where: str) -> str:
    """Why int8 was not shipped on speed: the rule and the numbers, and how to ship it anyway."""
    ship_anyway = "--force-int8 ships it" if latency_ratio > 1 else "--min-speedup 0 or --force-int8 ships it"
    return (f"measured {describe_ratio(latency_ratio)} {where}; edgeopt ships int8 when it is at least "
            f"{percent(min_speedup)} faster {where} (--min-speedup {min_speedup:g}); {ship_anyway}")
