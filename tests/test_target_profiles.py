"""The shipped hardware target profiles (targets/*.toml): they load, cite sources, and their numbers add up."""

from __future__ import annotations

import json
import math
import re
import tomllib

import onnx.defs
import pytest

from edgeopt.graph.onnx_kinds import onnx_kind
from edgeopt.targets import builtin_targets_dir, list_targets, load_target

SHIPPED = {
    "rpi3b", "rpi-zero2w", "rpi4b", "rpi5", "cortex-a55", "cortex-a78", "jetson-orin-nano",
    "hexagon-htp", "coral-edgetpu", "ethos-u55", "rk3588-npu", "cortex-m55",
}
CPU_LIKE = {"rpi3b", "rpi-zero2w", "rpi4b", "rpi5", "cortex-a55", "cortex-a78", "jetson-orin-nano", "cortex-m55"}
# Whether the accelerator needs a fully int8-quantized model, as each profile's notes document it.
ACCELERATORS = {
    "coral-edgetpu": True,   # Coral: only fully 8-bit quantized TFLite models
    "ethos-u55": True,       # Vela: quantized int8/uint8/int16 tensors only
    "hexagon-htp": False,    # QNN HTP: QDQ int8/int16 fast path, fp16 via enable_htp_fp16_precision
    "rk3588-npu": False,     # RKNN: FP16 models run on the NPU too
    "jetson-orin-nano": False,  # TensorRT: fp32/fp16/int8
}

# Per microarchitecture, not per profile: (fp32 FLOP/cycle, fp16 FLOP/cycle or None, int8 op/cycle) per core, a
# MAC counting as 2 ops, and whether the core has the dot-product (asimddp) and half-precision (asimdhp) SIMD
# instructions. Each profile's core, cores and clock are read from its display name and checked against its
# fields, so a peak that disagrees with the core it names, or two profiles disagreeing about one core, fail.
CORES = {
    "Cortex-A53": (8, None, 16, False),   # one 4-lane FMLA/cycle; int8 widening MACs (assumed 2x)
    "Cortex-A72": (8, None, 16, False),   # one 4-lane FMLA/cycle over 2x64-bit pipes
    "Cortex-A76": (16, 32, 64, True),     # two 128-bit pipes, FMLA/SDOT on both
    "Cortex-A55": (8, 16, 32, True),      # one 128-bit op/cycle, SDOT
    "Cortex-A78": (16, 32, 64, True),     # two 128-bit pipes (A78AE: the same core)
    "Cortex-M55": (4, 8, 16, None),       # Helium on a 64-bit (dual-beat) datapath; not Linux cpuinfo flags
}
DISPLAYED = re.compile(r"(?:(\d+)x (Cortex-[AM]\d+)(?:AE)? @ ([\d.]+) (GHz|MHz))|"
                       r"(?:(Cortex-[AM]\d+).*?\((\d+) cores? @ ([\d.]+) (GHz|MHz))|"
                       r"(?:(Cortex-[AM]\d+) MCU.*?(\d+) core @ ([\d.]+) (GHz|MHz))")


def displayed_core(display_name: str) -> tuple[str, int, float]:
    """(core, cores, GHz) as the profile's display name states them."""
    match = DISPLAYED.search(display_name)
    assert match, f"no 'Nx Cortex-X @ F GHz' in {display_name!r}"
    groups = [g for g in match.groups() if g is not None]
    if groups[0].isdigit():
        count, core, clock, unit = groups
    else:
        core, count, clock, unit = groups
    return core, int(count), float(clock) / (1000 if unit == "MHz" else 1)
# Accelerator peaks: name -> {dtype: ops/s} from the documented inputs.
DERIVED_ACCEL_PEAKS = {
    "coral-edgetpu": {"int8": 4e12},                      # Google's 4 TOPS
    "ethos-u55": {"int8": 128 * 2 * 500e6},               # 128 MACs x 2 x 500 MHz (Vela High_End_Embedded)
    "rk3588-npu": {"int8": 2e12},                         # one NPU core of 3 (one model, default core_mask)
    "jetson-orin-nano": {"fp32": 1024 * 2 * 625e6,        # CUDA cores x FMA x GPU clock
                         "int8": 40e12 / 2},              # 40 sparse TOPS -> 20 dense
}
URL = re.compile(r"https?://\S+")


@pytest.fixture(scope="module")
def targets():
    return {t.name: t for t in list_targets()}


def test_every_shipped_profile_loads(targets):
    assert SHIPPED <= set(targets), f"missing: {sorted(SHIPPED - set(targets))}"
    for name in SHIPPED:
        assert load_target(name) == targets[name]


def test_names_are_unique_and_match_the_file(targets):
    files = sorted(builtin_targets_dir().glob("*.toml"))
    stems = [f.stem for f in files]
    assert len(stems) == len(set(stems))
    assert set(stems) == set(targets)
    for name, target in targets.items():
        assert target.name == name
        assert target.origin.endswith(f"{name}.toml")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_profile_cites_public_sources(targets, name):
    sources = targets[name].sources
    assert sources and all(URL.search(s) for s in sources), f"{name}: every source needs a URL"
    # URL plus what it supports, not a bare link.
    assert all(len(URL.sub("", s).strip(" —-")) > 10 for s in sources), f"{name}: say what each source supports"
    assert targets[name].notes.strip(), f"{name}: notes explain choices and what could not be sourced"


@pytest.mark.parametrize("name", sorted(CPU_LIKE))
def test_cpu_profiles_have_the_basics(targets, name):
    t = targets[name]
    assert t.kind in ("cpu", "mcu")
    assert t.arch and t.arch != "detect"
    assert t.cores and t.cores >= 1
    assert t.clock_ghz and t.clock_ghz > 0
    assert t.peak_ops_per_s.fp32 and t.peak_ops_per_s.int8
    assert t.peak_ops_per_s.int8 >= t.peak_ops_per_s.fp32
    assert t.efficiency and all(0 < v <= 1 for v in t.efficiency.values())
    assert {"conv", "matmul", "fully_connected"} <= set(t.efficiency)


@pytest.mark.parametrize("name", sorted(CPU_LIKE))
def test_cpu_peaks_follow_from_the_core_its_cores_and_clock(targets, name):
    t = targets[name]
    core, cores, ghz = displayed_core(t.display_name)
    assert (t.cores, t.clock_ghz) == (cores, ghz), f"{name}: fields disagree with {t.display_name!r}"
    fp32, fp16, int8, dot = CORES[core]
    assert math.isclose(t.peak_ops_per_s.fp32, cores * ghz * 1e9 * fp32, rel_tol=0.01)
    assert math.isclose(t.peak_ops_per_s.int8, cores * ghz * 1e9 * int8, rel_tol=0.01)
    if fp16 is None:
        assert t.peak_ops_per_s.fp16 is None, f"{name}: no fp16 arithmetic on {core}"
    else:
        assert math.isclose(t.peak_ops_per_s.fp16, cores * ghz * 1e9 * fp16, rel_tol=0.01)
    if dot is not None:  # the recipe's ISA family follows from these flags
        assert ("asimddp" in t.isa_features) == dot and ("asimdhp" in t.isa_features) == (fp16 is not None)


def test_rpi5_fp32_peak_matches_documented_derivation(targets):
    # 4 cores x 2.4 GHz x (2 pipes x 4 fp32 lanes x 2 ops per FMA)
    assert math.isclose(targets["rpi5"].peak_ops_per_s.fp32, 4 * 2.4e9 * 2 * 4 * 2, rel_tol=0.01)


def test_isa_features_use_linux_cpuinfo_names(targets):
    linux_names = {"fp", "asimd", "fphp", "asimdhp", "asimddp", "i8mm", "sve", "sve2", "bf16", "crc32", "aes",
                   "pmull", "sha1", "sha2", "atomics", "asimdrdm"}
    for name in CPU_LIKE - {"cortex-m55"}:  # an MCU has no /proc/cpuinfo
        t = targets[name]
        assert set(t.isa_features) <= linux_names, (name, set(t.isa_features) - linux_names)
        assert "asimd" in t.isa_features
        # Dot product exactly where an int8 rate above 2x fp32 is claimed.
        has_dot = "asimddp" in t.isa_features
        assert has_dot == (t.peak_ops_per_s.int8 > 2 * t.peak_ops_per_s.fp32 + 1), name


@pytest.mark.parametrize("name", sorted(ACCELERATORS))
def test_accelerator_sections(targets, name):
    t = targets[name]
    acc = t.accelerator
    assert acc is not None, f"{name} needs an [accelerator] section"
    assert acc.delegate.strip()
    assert acc.requires_full_int8 is ACCELERATORS[name]
    assert acc.supported_ops and all(acc.supported_ops.values())
    assert set(acc.supported_ops) <= set(acc.dtypes), "supported_ops keyed by the dtypes the accelerator runs"
    assert acc.host_cpu in targets, f"{name}: host_cpu {acc.host_cpu!r} is not a shipped target"
    assert targets[acc.host_cpu].kind in ("cpu", "mcu")
    if acc.requires_full_int8:
        assert set(acc.dtypes) <= {"int8", "int16"}


@pytest.mark.parametrize("name", sorted(ACCELERATORS))
def test_supported_ops_are_real_op_kinds(targets, name):
    """Every kind an accelerator lists (and every efficiency key) is one ONNX's operators map to: a typo
    would silently keep the op off the accelerator."""
    acc = targets[name].accelerator
    ops = {op for ops in acc.supported_ops.values() for op in ops}
    known = {onnx_kind(schema.name) for schema in onnx.defs.get_all_schemas()}
    known |= {onnx_kind(op, "com.microsoft") for op in ("Gelu", "FastGelu", "SkipLayerNormalization")}
    assert not sorted(ops - known), f"{name}: not op kinds: {sorted(ops - known)}"
    assert not {k.split(".")[0] for k in targets[name].efficiency} - known - {"default"}
    with open(targets[name].origin, "rb") as fh:  # the file itself lists each op once per dtype
        listed = tomllib.load(fh)["accelerator"]["supported_ops"]
    for per_dtype in listed.values():
        assert len(per_dtype) == len(set(per_dtype)), f"{name}: duplicate ops"
    assert set(acc.op_constraints) <= ops, f"{name}: constraints for ops not listed as supported"
    assert {"conv"} <= ops


@pytest.mark.parametrize("name", sorted(DERIVED_ACCEL_PEAKS))
def test_accelerator_peaks_match_documented_inputs(targets, name):
    peaks = targets[name].accelerator.peak_ops_per_s
    for dtype, expected in DERIVED_ACCEL_PEAKS[name].items():
        assert math.isclose(getattr(peaks, dtype), expected, rel_tol=0.01), (name, dtype)


def test_unsourced_numbers_are_left_out(targets):
    # Documented gaps stay None rather than invented.
    assert targets["hexagon-htp"].accelerator.peak_ops_per_s.int8 is None
    assert targets["rpi3b"].memory_bandwidth_bytes_per_s is None
    assert targets["rpi-zero2w"].memory_bandwidth_bytes_per_s is None
    assert targets["rk3588-npu"].accelerator.peak_ops_per_s.fp16 is None


def test_sizes_are_plain_byte_counts(targets):
    for name in SHIPPED:
        t = targets[name]
        for value in (t.ram_bytes, t.sram_bytes, t.caches.l1d_bytes, t.caches.l2_bytes, t.caches.l3_bytes):
            assert value is None or (isinstance(value, int) and value % 1024 == 0), (name, value)
        if t.accelerator:
            for value in (t.accelerator.sram_bytes, t.accelerator.flash_bytes):
                assert value is None or (isinstance(value, int) and value > 0)
    assert targets["coral-edgetpu"].accelerator.sram_bytes == 8 * 2**20
    assert targets["rpi-zero2w"].ram_bytes == 512 * 2**20


def test_cli_lists_all_shipped_targets(cli):
    result = cli("targets", "list", "--json")
    assert result.code == 0
    listed = json.loads(result.stdout)
    names = [t["name"] for t in listed]
    assert SHIPPED <= set(names) and len(names) == len(set(names))
    by_name = {t["name"]: t for t in listed}
    assert by_name["coral-edgetpu"]["accelerator"]["delegate"] == "libedgetpu"
    shown = cli("targets", "show", "rpi5", "--json")
    assert shown.code == 0 and json.loads(shown.stdout)["peak_ops_per_s"]["fp32"] == pytest.approx(153.6e9)
    human = cli("targets", "list")
    assert human.code == 0 and "rpi5" in human.stdout  # the table wraps long names at 80 columns
