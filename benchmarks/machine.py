"""One line naming the machine a benchmark ran on: CPU model, cores, and the int8-relevant CPU flags.

int8 kernels differ between x86 with AVX2 only (u8s8 pair sums saturate), x86 with AVX-512 VNNI and
ARM with or without dot-product, so every table must say which one produced it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """e.g. "CPU: AMD EPYC 9B14, 2 logical cores, x86_64; int8 ISA: x86-vnni (avx2 avx512_vnni ...)"."""
    from edgeopt.targets import int8_isa_summary

    return (f"CPU: {cpu_model()}, {os.cpu_count()} logical cores, {platform.machine()}; "
            f"int8 ISA: {int8_isa_summary()}")
