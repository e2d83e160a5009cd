"""Hardware target profiles: one TOML file per target, schema-checked at load time.

Profiles ship inside the wheel (``edgeopt/_targets``, copied from the repository's
``targets/`` folder); in a source checkout they are read from ``targets/`` directly.
Users add their own with ``--targets-dir`` or ``EDGEOPT_TARGETS_DIR``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgeopt.errors import InputError, first_validation_error
from edgeopt.graph.onnx_kinds import kind_of_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# 2: efficiency and supported_ops are keyed by op kinds (graph.kinds); 1 spelled ONNX op types, still read
TARGET_SCHEMA_VERSION = 2
_READABLE_SCHEMA_VERSIONS = (1, 2)
TARGETS_DIR_ENV = "EDGEOPT_TARGETS_DIR"
DETECT = "detect"


class PeakThroughput(BaseModel):
    """Peak operations per second by dtype (a MAC counts as two ops)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fp32: float | None = None
    fp16: float | None = None
    int8: float | None = None


class Caches(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    l1d_bytes: int | None = Field(None, gt=0)  # per core
    l2_bytes: int | None = Field(None, gt=0)  # per cluster or per core, see notes
    l3_bytes: int | None = Field(None, gt=0)


class Accelerator(BaseModel):
    """An NPU/TPU/DSP beside the CPU: what it runs, how it is reached, what it holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    runtime: Literal["onnxruntime", "tflite", "qnn", "rknn", "vela", "other"]
    delegate: str  # onnxruntime execution provider or TFLite delegate / compiler
    requires_full_int8: bool = False
    dtypes: tuple[str, ...] = ("int8",)
    peak_ops_per_s: PeakThroughput = PeakThroughput()
    sram_bytes: int | None = Field(None, gt=0)
    flash_bytes: int | None = Field(None, gt=0)
    # Op kinds (per dtype) that run on the accelerator; anything else falls back to the CPU.
    supported_ops: dict[str, tuple[str, ...]] = {}
    # Known shape limits, per op kind, as the vendor states them.
    op_constraints: dict[str, str] = {}
    partition_switch_us: float | None = Field(None, ge=0)  # cost of each CPU<->accelerator hand-over
    host_cpu: str | None = None  # name of the target profile of the CPU that drives it

    @field_validator("supported_ops")
    @classmethod
    def _as_kinds(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {dtype: tuple(dict.fromkeys(kind_of_key(op) for op in ops)) for dtype, ops in value.items()}

    @field_validator("op_constraints")
    @classmethod
    def _constraints_by_kind(cls, value: dict[str, str]) -> dict[str, str]:
        return {kind_of_key(op): text for op, text in value.items()}


class RuntimeMemory(BaseModel):
    """How the target's runtime holds a model (analysis.runtime_memory): measured on the device by
    `targets calibrate` with probe models, or edgeopt's defaults for the runtime and architecture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interpreter_baseline_bytes: int | None = Field(None, ge=0)  # Python + numpy + the runtime imported
    session_fixed_bytes: int = Field(ge=0)  # a one-op model's session, loaded
    session_per_node_bytes: int = Field(0, ge=0)  # and what each further node adds to it (kernel, plan entries)
    session_per_initializer_bytes: int = Field(0, ge=0)  # and each initializer beyond its data (tensor, name)
    first_run_bytes: int = Field(0, ge=0)  # what that session's first run sets up (arena chunks, buffers)
    # what a session that runs int8 kernels holds beyond those (their code and tables, touched once loaded and
    # on the first run; onnxruntime 1.32 on x86: 0.4 and 0.2 MiB), measured on a small QDQ model
    int8_kernels_bytes: int = Field(0, ge=0)
    int8_first_run_bytes: int = Field(0, ge=0)
    # copies of a weight the runtime keeps once loaded, by the kind of the node reading it ("conv", "default")
    weight_copies: dict[str, float] = {}
    # copies of a weight in memory at the load peak, by kind, as a process with the default allocator sees it:
    # those held at once while the session is created (parsed file, runtime copy, re-laid-out or pre-packed
    # copy) and what the allocator kept of the freed ones; a plain number is every kind's
    load_weight_copies: dict[str, float] = {"default": 2.0}
    # the copies held at once alone, by kind: what a weight too large for glibc to keep costs (a buffer of 32 MiB
    # or more is always mapped on its own and unmapped when freed); None: as load_weight_copies
    load_weight_copies_held: dict[str, float] | None = None
    # kinds whose weights the runtime pre-packs one at a time: loading also holds the largest one's packed copy
    packed_one_at_a_time: tuple[str, ...] = ()
    # a weight an If branch (a subgraph) defines: the copies kept beyond its kind's once loaded (onnxruntime keeps
    # the subgraph's own tensor beside the session's: x86 1.0), and those held beyond its kind's at the load peak
    subgraph_weight_copies: float = Field(0.0, ge=0.0)
    subgraph_load_copies: float = Field(0.0, ge=0.0)
    # held while loading per byte that constant folding computes (a weight sliced and concatenated at load: the
    # folded tensors, their protobuf and runtime copies; measured on x86 with onnxruntime 1.32: 0.75x for
    # 512 KiB weights, 1.0x for 4 MiB ones)
    folded_copies: float = Field(1.0, ge=0.0)
    # measured activation arena / the one analysis.arena simulates (before calibration recipe 25: / the planned
    # peak, so a calibration from then overstates the arena about twofold until the target is calibrated again)
    arena_factor: float = Field(ge=0.0)
    source: str = ""

    @field_validator("weight_copies", "load_weight_copies", "load_weight_copies_held", mode="before")
    @classmethod
    def _copies_by_kind(cls, value):
        if value is None:
            return None
        if isinstance(value, (int, float)):
            value = {"default": float(value)}
        return {(key if key == "default" else kind_of_key(key)): factor for key, factor in value.items()}


class BandwidthPoint(BaseModel):
    """Bytes per second reading weights of ``bytes`` in all, run after run (at ``peak_threads`` and at one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: int = Field(gt=0)
    rate: float = Field(gt=0)
    rate_one_thread: float | None = Field(None, gt=0)


class KernelBandwidth(BaseModel):
    """Bytes per second as onnxruntime's kernels read weights (a MatMul of one row: a pure stream), measured by
    `targets calibrate` at ``peak_threads`` and at one thread: from DRAM (weights far beyond the caches) and from
    cache (one small weight read over and over)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dram: float = Field(gt=0)
    dram_one_thread: float | None = Field(None, gt=0)
    cache: float | None = Field(None, gt=0)
    cache_one_thread: float | None = Field(None, gt=0)
    # The same stream at several weight sizes, smallest first (the cache and DRAM figures among them): where a
    # model's weights stop being re-read from cache on the next run is measured, not read from the cache sizes
    # (a cloud VM's 480 MiB L3 gave a 4 MiB weight no more than DRAM's 28 GB/s at one thread).
    working_sets: list[BandwidthPoint] = []
    # onnxruntime's NCHWc reorders (ReorderInput/ReorderOutput) at several map sizes, ``bytes`` read and written
    # per reorder: a copy writes a map it did not read, and leaves the caches sooner than a weight read run after
    # run (AMD EPYC, one thread: 80 GB/s for 3 MiB maps, 40 for 10 MiB, where that weight curve said 76)
    reorders: list[BandwidthPoint] = []
    # element-wise ops (a chain of Muls by a scalar) over maps of several sizes, ``bytes`` read and written per op:
    # an op without MACs writes what it reads, and beyond L2 that runs slower than the weight curve's reads (AMD
    # EPYC, one thread: 81-86 GB/s up to 4 MiB maps, 48 at 8, 35 at 16, 31 at 32; PP-OCRv4's detector's Adds,
    # Muls and Clips over 10-13 MB maps ran at 34-54, priced at 52-65 by the weight curve)
    streams: list[BandwidthPoint] = []


class EstimateError(BaseModel):
    """The relative error band of a target's static estimates (0.2: within ±20% of the measurement), with how it
    was found (analysis.validation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency: float | None = Field(None, gt=0)
    # the latency band at more than one thread, where it was validated apart (None: ``latency`` at any count)
    latency_parallel: float | None = Field(None, gt=0)
    memory: float | None = Field(None, gt=0)
    source: str = ""


class TargetProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = TARGET_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    display_name: str
    kind: Literal["cpu", "npu", "gpu", "mcu"]
    arch: str
    isa_features: tuple[str, ...] = ()
    cores: int | None = Field(None, ge=1)
    clock_ghz: float | None = Field(None, gt=0)
    ram_bytes: int | None = Field(None, gt=0)
    peak_ops_per_s: PeakThroughput = PeakThroughput()
    # The thread count ``peak_ops_per_s`` holds for (unset: ``cores``), and the peaks of one thread where
    # measured (unset: an equal share of ``peak_ops_per_s`` per thread). Estimates at other thread counts
    # interpolate between the two (`peaks_at`).
    peak_threads: int | None = Field(None, ge=1)
    single_thread_peak_ops_per_s: PeakThroughput | None = None
    memory_bandwidth_bytes_per_s: float | None = Field(None, gt=0)
    kernel_bandwidth: KernelBandwidth | None = None  # measured as kernels read; estimates prefer it (`bandwidth_at`)
    caches: Caches = Caches()
    sram_bytes: int | None = Field(None, gt=0)  # on-chip memory usable for tensors (MCUs, NPUs)
    storage: str | None = None
    # Fraction of peak throughput reached per op kind (roofline efficiency factors; "conv.depthwise" refines
    # a kind by class, "conv.depthwise@int8" by dtype too, "default" covers the kinds not listed). `targets
    # calibrate` measures the classes on the device (runtime.class_bench).
    efficiency: dict[str, float] = {}
    # The same table measured at one thread where `targets calibrate` timed the classes there too (a class that
    # scales badly with threads, like depthwise Convs, has a higher one-thread efficiency); keys not listed:
    # ``efficiency``. Thread counts in between interpolate (`efficiency_at`).
    single_thread_efficiency: dict[str, float] = {}
    accelerator: Accelerator | None = None
    runtime: Literal["onnxruntime", "tflite"] = "onnxruntime"
    execution_provider: str | None = None
    runtime_memory: RuntimeMemory | None = None
    # The fixed cost of one inference call beyond its nodes' (input binding, output allocation, the API call),
    # in µs: measured by `targets calibrate` (a one-node model); unset: not counted (recorded in assumptions).
    call_overhead_us: float | None = Field(None, ge=0)
    # What one node's kernel launch costs beyond its work, in µs: measured by `targets calibrate` (a chain of 1x1
    # Convs and Adds doing almost no work); unset: edgeopt's default (analysis.profile.NODE_OVERHEAD_US).
    node_overhead_us: float | None = Field(None, ge=0)
    # a float Conv's dispatch at the calibration's thread count (peak_threads) when above one: onnxruntime's
    # float convolution hands even a tiny map to its thread pool (2.2 µs at two threads against 0.65 at one, an
    # AVX-512 Xeon with onnxruntime 1.32); Adds, activations, small MatMuls and int8 Convs measured no extra.
    # Unset: node_overhead_us at any thread count
    parallel_conv_overhead_us: float | None = Field(None, ge=0)
    # The MACs at which an int8 MatMul gains half of what more threads give it (analysis.profile.PARALLEL_HALF_WORK,
    # by kernel family "matmul@int8"), measured by calibration where the kernels differ by CPU: an AVX-512 Xeon's
    # int8 MatMuls gained at most 1.03x at two threads up to 67 M MACs, an AMD EPYC (Zen 4)'s 1.48x at 1 M.
    # Unset: the constant.
    parallel_half_macs: dict[str, float] = Field(default_factory=dict)
    # how far this target's estimates were found from measurements on it (unset: edgeopt's own validation
    # where it has one, analysis.validation)
    estimate_error: EstimateError | None = None
    # Channel counts the kernels handle without padding (SIMD lanes, NPU blocks); structured pruning
    # rounds kept channels to it. Unset: derived from isa_features (edgeopt.stages.prune.preferred_channel_multiple).
    preferred_channel_multiple: int | None = Field(None, ge=1)
    sources: tuple[str, ...] = ()
    notes: str = ""
    origin: str = ""  # file the profile was read from

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value not in _READABLE_SCHEMA_VERSIONS:
            raise ValueError(f"schema_version {value} is not supported (expected {TARGET_SCHEMA_VERSION})")
        return TARGET_SCHEMA_VERSION  # version 1's ONNX op names are read as kinds below

    @field_validator("efficiency", "single_thread_efficiency")
    @classmethod
    def _efficiency_by_kind(cls, value: dict[str, float]) -> dict[str, float]:
        return {kind_of_key(key): factor for key, factor in value.items()}


def peaks_at(profile: TargetProfile, threads: int | None) -> PeakThroughput:
    """``profile``'s CPU peaks with ``threads`` intra-op threads (None: all its cores). Each thread beyond the
    first adds what the measured (or stated) peaks say one more thread adds, up to the core count."""
    cores = profile.cores or profile.peak_threads or 1
    measured_at = profile.peak_threads or cores
    wanted = max(1, min(threads or cores, cores))
    if wanted == measured_at:
        return profile.peak_ops_per_s
    single = profile.single_thread_peak_ops_per_s or PeakThroughput()
    values: dict[str, float | None] = {}
    for dtype in ("fp32", "fp16", "int8"):
        full = getattr(profile.peak_ops_per_s, dtype)
        one = getattr(single, dtype) or (full / measured_at if full else None)
        if full is None or one is None:
            values[dtype] = None
            continue
        values[dtype] = _interpolate(one, full, measured_at, wanted)
    return PeakThroughput(**values)


def _interpolate(one: float, full: float, measured_at: int, wanted: int) -> float:
    step = (full - one) / (measured_at - 1) if measured_at > 1 else one
    return max(one, one + step * (wanted - 1))


def efficiency_at(profile: TargetProfile, threads: int | None) -> dict[str, float]:
    """``profile``'s efficiency table with ``threads`` intra-op threads (None: all its cores): ``efficiency`` at
    the measured count, the one-thread table at one, linear in the thread count between."""
    if not profile.single_thread_efficiency:
        return profile.efficiency
    cores = profile.cores or profile.peak_threads or 1
    measured_at = profile.peak_threads or cores
    wanted = max(1, min(threads or cores, cores))
    if wanted == measured_at:
        return profile.efficiency
    table = dict(profile.efficiency)
    for key, one in profile.single_thread_efficiency.items():
        full = profile.efficiency.get(key)
        table[key] = one if full is None or measured_at <= 1 else one + (full - one) * (wanted - 1) / (measured_at - 1)
    return table


def bandwidth_at(profile: TargetProfile, threads: int | None, resident: bool = False) -> float | None:
    """The bandwidth a kernel reads at with ``threads`` threads: from cache when ``resident`` and measured, else
    from DRAM; the measured kernel figures where `targets calibrate` took them, else ``memory_bandwidth_bytes_per_s``
    (a published STREAM-like figure, for any thread count)."""
    measured = profile.kernel_bandwidth
    if measured is None:
        return profile.memory_bandwidth_bytes_per_s
    cores = profile.cores or profile.peak_threads or 1
    measured_at = profile.peak_threads or cores
    wanted = max(1, min(threads or cores, cores))
    full, one = ((measured.cache, measured.cache_one_thread) if resident and measured.cache
                 else (measured.dram, measured.dram_one_thread))
    if one is None:
        return full
    full = _within_linear_gain(one, full, measured_at)
    return full if wanted == measured_at else _interpolate(one, full, measured_at, wanted)


def _within_linear_gain(one: float, full: float, measured_at: int) -> float:
    """A bandwidth measured at ``measured_at`` threads, at most ``measured_at`` times its one-thread figure. The two
    are timed apart, and a working set near the last-level cache is the most sensitive to what other tenants hold
    in it: one calibration of a 2-core VM had a 33 MB weight read 3.8x faster at two threads than at one, which
    priced a 21 MB MLP 2.5x faster at two threads (measured: 2.0x)."""
    return min(full, one * measured_at) if measured_at > 1 else full


def weight_bandwidth_at(profile: TargetProfile, threads: int | None, weight_bytes: int) -> float | None:
    """The bandwidth at which kernels read a model's ``weight_bytes`` of weights, run after run, from the measured
    working-set points (log-linear in the size between two points, the end points beyond them); None where the
    profile has no such points (then the cache sizes decide, ``bandwidth_at``)."""
    measured = profile.kernel_bandwidth
    return None if measured is None else _rate_between(profile, measured.working_sets, threads, weight_bytes)


def reorder_bandwidth_at(profile: TargetProfile, threads: int | None, copy_bytes: int) -> float | None:
    """The bandwidth of an NCHWc reorder that reads and writes ``copy_bytes`` in all, from the measured reorder
    points (as weight_bandwidth_at); None where the profile has fewer than two."""
    measured = profile.kernel_bandwidth
    return None if measured is None else _rate_between(profile, measured.reorders, threads, copy_bytes)


def stream_bandwidth_at(profile: TargetProfile, threads: int | None, working_set: int) -> float | None:
    """The bandwidth of an element-wise op that reads and writes ``working_set`` bytes in all, from the measured
    stream points (as weight_bandwidth_at); None where the profile has fewer than two, or below the smallest
    (there the working-set curve prices it)."""
    measured = profile.kernel_bandwidth
    if measured is None or not measured.streams or working_set < min(p.bytes for p in measured.streams):
        return None
    return _rate_between(profile, measured.streams, threads, working_set)


def _rate_between(profile: TargetProfile, measured_points: list[BandwidthPoint], threads: int | None,
                  nbytes: int) -> float | None:
    if len(measured_points) < 2:
        return None
    cores = profile.cores or profile.peak_threads or 1
    measured_at = profile.peak_threads or cores
    wanted = max(1, min(threads or cores, cores))

    def rate(point: BandwidthPoint) -> float:
        if point.rate_one_thread is None:
            return point.rate
        full = _within_linear_gain(point.rate_one_thread, point.rate, measured_at)
        return full if wanted == measured_at else _interpolate(point.rate_one_thread, full, measured_at, wanted)

    return log_linear_at([(p.bytes, rate(p)) for p in sorted(measured_points, key=lambda p: p.bytes)], nbytes)


def log_linear_at(points: list[tuple[float, float]], x: float) -> float:
    """The value at ``x`` on the curve through ``points`` (``(x, value)`` sorted by x, both positive): log-linear in
    both between two points, the end point's value beyond either end (how measured size curves are read)."""
    if x <= points[0][0]:
        return points[0][1]
    for (low_x, low), (high_x, high) in zip(points, points[1:]):
        if x <= high_x:
            where = math.log(x / low_x) / math.log(high_x / low_x)
            return math.exp(math.log(low) + where * (math.log(high) - math.log(low)))
    return points[-1][1]


def builtin_targets_dir() -> Path:
    packaged = Path(__file__).parent / "_targets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "targets"


def user_targets_dir() -> Path:
    """Where `edgeopt targets calibrate` writes by default (XDG config folder)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edgeopt" / "targets"


def _search_dirs(extra: Path | None) -> list[Path]:
    """Highest priority first: --targets-dir, EDGEOPT_TARGETS_DIR, the user folder, built-ins."""
    dirs = []
    if extra is not None:
        dirs.append(Path(extra))
    if os.environ.get(TARGETS_DIR_ENV):
        dirs.append(Path(os.environ[TARGETS_DIR_ENV]))
    dirs.append(user_targets_dir())
    dirs.append(builtin_targets_dir())
    return dirs


# CPU flags that decide which int8 (and fp16/bf16) kernels a runtime takes
INT8_RELEVANT_FLAGS = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "f16c",
                                 "asimd", "asimddp", "i8mm", "sve", "sve2", "fphp", "asimdhp", "bf16"})
_VNNI = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_ARM_DOT = frozenset({"asimddp", "i8mm", "sve", "sve2"})


def isa_family_of(arch: str, features: set[str] | frozenset[str] | tuple[str, ...]) -> str:
    """x86-vnni, x86 (AVX2 u8s8 kernels saturate int16 pair sums), arm-dot, arm or other."""
    features, arch = set(features), arch.lower()
    if arch in ("x86_64", "amd64", "x86", "i686"):
        return "x86-vnni" if features & _VNNI else "x86"
    if arch.startswith(("arm", "aarch64")):
        return "arm-dot" if features & _ARM_DOT else "arm"
    return "other"


def host_cpu_features() -> tuple[str, ...]:
    """This machine's int8-relevant CPU flags, from /proc/cpuinfo (empty where it cannot be read)."""
    features: set[str] = set()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            features.update(value.split())
    return tuple(sorted(features & INT8_RELEVANT_FLAGS))


def int8_isa_summary() -> str:
    """One line for logs and benchmark tables: "x86-vnni (avx2 avx512_vnni avx512bw avx512f fma)"."""
    features = host_cpu_features()
    return f"{isa_family_of(platform.machine() or 'unknown', features)} ({' '.join(features) or 'no flags read'})"


def _detect_host() -> dict[str, Any]:
    facts: dict[str, Any] = {"arch": platform.machine() or "unknown", "cores": os.cpu_count(),
                             "isa_features": host_cpu_features()}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                facts["ram_bytes"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    facts["caches"] = _detect_caches()
    return facts


def _detect_caches() -> dict[str, int]:
    """Data/unified cache sizes of CPU 0 from sysfs (Linux), by level: {"l1d_bytes": ..., "l2_bytes": ...}."""
    sizes: dict[str, int] = {}
    units = {"K": 1024, "M": 1024 * 1024, "G": 1024 ** 3}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction" or level not in ("1", "2", "3") or not text:
            continue
        try:
            value = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        except ValueError:
            continue
        sizes["l1d_bytes" if level == "1" else f"l{level}_bytes"] = value
    return sizes


def read_target_file(path: Path) -> TargetProfile:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read target file {path}: {exc}", "check the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}", "fix the syntax") from None
    detected = _detect_host() if DETECT in raw.values() else {}
    for key in [k for k, v in raw.items() if v == DETECT]:
        raw[key] = detected.get(key if key != "ram" else "ram_bytes")
    if "ram" in raw:
        raw["ram_bytes"] = raw.pop("ram")
    raw["origin"] = str(path)
    try:
        profile = TargetProfile.model_validate(raw)
    except ValidationError as exc:
        where, message = first_validation_error(exc, "(top level)")
        raise InputError(f"{path}: target field {where!r}: {message}",
                         "see targets/host.toml for the schema") from None
    if profile.name != path.stem:
        raise InputError(f"{path}: name {profile.name!r} does not match the file name",
                         f"rename the file to {profile.name}.toml or fix the name")
    return profile


def list_targets(extra_dir: Path | None = None) -> list[TargetProfile]:
    """All targets; a user folder overrides built-ins with the same name."""
    found: dict[str, TargetProfile] = {}
    for directory in reversed(_search_dirs(extra_dir)):
        if not directory.is_dir():
            if directory not in (builtin_targets_dir(), user_targets_dir()):
                raise InputError(f"targets folder not found: {directory}", f"check --targets-dir / {TARGETS_DIR_ENV}")
            continue
        for path in sorted(directory.glob("*.toml")):
            found[path.stem] = read_target_file(path)
    return sorted(found.values(), key=lambda t: t.name)


def load_target(name: str, extra_dir: Path | None = None) -> TargetProfile:
    targets = {t.name: t for t in list_targets(extra_dir)}
    if name not in targets:
        raise InputError(f"unknown target {name!r}", f"known targets: {', '.join(sorted(targets)) or '(none)'}")
    return targets[name]


def host_cpu_of(target: TargetProfile, extra_dir: Path | None = None) -> TargetProfile | None:
    """The CPU profile an accelerator target falls back to (its ``host_cpu``); None for CPU targets."""
    if target.accelerator and target.accelerator.host_cpu:
        return load_target(target.accelerator.host_cpu, extra_dir)
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # inside an array (kernel_bandwidth.working_sets): an inline table
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    # JSON's string escapes (\n, \", \\, \uXXXX) are TOML's basic-string escapes too
    return json.dumps(str(value), ensure_ascii=False)


def target_to_toml(profile: TargetProfile, header: str = "") -> str:
    """Serialise a profile (nested models as tables; None fields left out)."""
    data = profile.model_dump(mode="json", exclude={"origin"}, exclude_none=True)
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if flat or not table:
            lines += ["", f"[{name}]"] + [f'"{k}" = {_toml_value(v)}' for k, v in flat.items()]
        for sub, values in ((k, v) for k, v in table.items() if isinstance(v, dict)):
            lines += ["", f"[{name}.{sub}]"] + [f'"{k}" = {_toml_value(v)}' for k, v in values.items()]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def host_target() -> TargetProfile:
    return load_target("host")
