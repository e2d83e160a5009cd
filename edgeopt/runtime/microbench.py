"""Microbenchmarks that ground a CPU target's peaks in measurement (`targets calibrate`).

Throughput is measured the way models will run: onnxruntime sessions on one op
(a large MatMul, a 3x3 Conv), fp32 and int8 (QDQ, as edgeopt quantizes), plus a
streaming copy for memory bandwidth.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import BaseModel, ConfigDict

from edgeopt.events import Events
from edgeopt.targets import TargetProfile


class MicrobenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int
    matmul_fp32_ops_per_s: float
    matmul_int8_ops_per_s: float | None
    conv_fp32_ops_per_s: float
    conv_int8_ops_per_s: float | None
    memory_bandwidth_bytes_per_s: float
    # the same compute models at one thread (by model name: "matmul_fp32", ...), when ``threads`` > 1
    single_thread_ops_per_s: dict[str, float] = {}
    # the op-class and held-out models of runtime.class_bench ("class:conv.depthwise", "check:mlp", ...)
    class_ops_per_s: dict[str, float] = {}
    # RSS increases (baseline, after_load, load_peak, run_peak) of the memory probes, by probe name
    memory_probes: dict[str, dict[str, int]] = {}
    # a call to a one-node model: its median (what estimates add per run) and its best (set apart from every
    # best-of rate above); 0: not measured
    call_overhead_s: float = 0.0
    call_best_s: float = 0.0
    # models whose all-core timing was taken again because it ran in a slow spell of the other cores (the runner's
    # pace model, device_runner.PACE_SLOWED)
    all_core_retimed: list[str] = []


def model_bytes(nodes, inputs, outputs, inits, domains: tuple[str, ...] = ()) -> bytes:
    """A model of opset 17 (and version 1 of each of ``domains``, e.g. com.microsoft)."""
    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    *(helper.make_opsetid(domain, 1) for domain in domains)])
    model.ir_version = 8
    return model.SerializeToString()


def matmul_model(n: int) -> tuple[bytes, np.ndarray, int]:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((n, n)).astype(np.float32)
    w = numpy_helper.from_array(weights, "w")
    data = model_bytes([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    return data, weights, 2 * n**3


def _conv(c: int, hw: int) -> tuple[bytes, np.ndarray, int]:
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)
    w = numpy_helper.from_array(weights, "w")
    data = model_bytes([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])], [w])
    return data, weights, 2 * c * c * 9 * hw * hw


def qdq_pair(name: str, scale: float, zero_point: int, dtype: int) -> tuple[list[Any], list[onnx.TensorProto]]:
    """QuantizeLinear + DequantizeLinear of tensor ``name`` (u8 activations, as edgeopt's x86 recipe)."""
    inits = [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
             helper.make_tensor(f"{name}_zp", dtype, [], [zero_point])]
    nodes = [helper.make_node("QuantizeLinear", [name, f"{name}_scale", f"{name}_zp"], [f"{name}_q"]),
             helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"], [f"{name}_dq"])]
    return nodes, inits


def _per_channel_s8(weights: np.ndarray, op: str) -> tuple[np.ndarray, np.ndarray]:
    """(s8 weights, one scale per output channel: axis 1 of a MatMul's, axis 0 of a Conv's)."""
    axis = 1 if op == "MatMul" else 0
    reduce = tuple(a for a in range(weights.ndim) if a != axis)
    scale = (np.abs(weights).max(axis=reduce) / 127).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = -1
    return np.clip(np.round(weights / scale.reshape(shape)), -127, 127).astype(np.int8), scale


def qdq_model(op: str, weights: np.ndarray, x_shape: list[int], y_shape: list[int], **attrs: Any) -> bytes:
    """The same one-op model in QDQ form, written here (measuring never runs the quantizer): u8 activations
    around the op, s8 weights with one scale per output channel; onnxruntime fuses it into its int8 kernel."""
    axis = 1 if op == "MatMul" else 0
    w_q, w_scale = _per_channel_s8(weights, op)
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_scale, "w_scale"),
             numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), "w_zp")]
    x_nodes, x_inits = qdq_pair("x", 8.0 / 255, 128, TensorProto.UINT8)
    y_nodes, y_inits = qdq_pair("y", 64.0 / 255, 128, TensorProto.UINT8)
    nodes = [*x_nodes,
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=axis),
             helper.make_node(op, ["x_dq", "w_dq"], ["y"], name=op.lower(), **attrs), *y_nodes]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                  [helper.make_tensor_value_info("y_dq", TensorProto.FLOAT, y_shape)], [*inits, *x_inits, *y_inits])


def op_stack(op: str, count: int, weight_shape: tuple[int, ...], x_shape: list[int],
             y_shape: list[int] | None = None, weight_value: float | None = None, **attrs: Any) -> bytes:
    """``count`` ``op`` nodes in a chain, each with its own standard-normal weight, or ``weight_value`` in every
    element (output ``y_shape``, default ``x_shape``)."""
    rng = np.random.default_rng(0)
    inits, nodes, previous = [], [], "x"
    for index in range(count):
        value = (rng.standard_normal(weight_shape) if weight_value is None else np.full(weight_shape, weight_value))
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"w{index}"))
        nodes.append(helper.make_node(op, [previous, f"w{index}"], [f"y{index}"], **attrs))
        previous = f"y{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, y_shape or x_shape)], inits)


def qdq_stack(op: str, count: int, weight_shape: tuple[int, ...], x_shape: list[int], **attrs: Any) -> bytes:
    """:func:`op_stack` in QDQ form (as :func:`qdq_model`): each op between u8 activations, its own s8 weight
    with one scale per output channel; onnxruntime runs each as its int8 kernel."""
    rng = np.random.default_rng(0)
    axis = 1 if op == "MatMul" else 0
    nodes, inits = qdq_pair("x", 8.0 / 255, 128, TensorProto.UINT8)
    previous = "x_dq"
    for index in range(count):
        quantized, scale = _per_channel_s8(rng.standard_normal(weight_shape).astype(np.float32), op)
        w, y = f"w{index}", f"y{index}"
        inits += [numpy_helper.from_array(quantized, w), numpy_helper.from_array(scale, f"{w}_scale"),
                  numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{w}_zp")]
        y_nodes, y_inits = qdq_pair(y, 8.0 / 255, 128, TensorProto.UINT8)
        nodes += [helper.make_node("DequantizeLinear", [w, f"{w}_scale", f"{w}_zp"], [f"{w}_dq"], axis=axis),
                  helper.make_node(op, [previous, f"{w}_dq"], [y], **attrs), *y_nodes]
        inits += y_inits
        previous = f"{y}_dq"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, x_shape)], inits)



def microbench_bundle(threads: int | None = None, budget_s: float = 1.5, checks: bool = True) -> dict[str, Any]:
    """The one-op models (fp32 and QDQ int8, built here) for the device runner's ``--microbench`` mode, with the
    op-class models of runtime.class_bench (timed for a third of ``budget_s``) and, with ``checks``, its
    held-out models."""
    import base64

    models: list[dict[str, Any]] = []

    def add(name: str, data: bytes | None, ops: int) -> None:
        if data is not None:
            models.append({"name": name, "model_b64": base64.b64encode(data).decode("ascii"), "ops": ops})

    mm, mm_weights, mm_ops = matmul_model(512)
    add("matmul_fp32", mm, mm_ops)
    add("matmul_int8", qdq_model("MatMul", mm_weights, [512, 512], [512, 512]), mm_ops)
    conv, conv_weights, conv_ops = _conv(64, 56)
    add("conv_fp32", conv, conv_ops)
    add("conv_int8", qdq_model("Conv", conv_weights, [1, 64, 56, 56], [1, 64, 56, 56], pads=[1, 1, 1, 1]), conv_ops)
    from edgeopt.runtime.class_bench import bundle_items
    from edgeopt.runtime.memory_probes import WEIGHT_PROBES, memory_probe_models

    models += bundle_items(budget_s / 3, checks)
    probes = [{"name": name, "model_b64": base64.b64encode(data).decode("ascii"),
               "default_allocator": name in WEIGHT_PROBES} for name, data in memory_probe_models().items()]
    return {"threads": threads or 0, "budget_s": budget_s, "bandwidth_mb": 256, "models": models,
            "memory_probes": probes, "call_model_b64": base64.b64encode(call_model()).decode("ascii"),
            "pace_model_b64": base64.b64encode(pace_model()).decode("ascii")}


def pace_model() -> bytes:
    """A float MatMul of 64 rows (256 -> 1024), which splits over every core: the runner times it before each
    all-core timing to tell a slow spell of the other cores (device_runner.PACE_SLOWED)."""
    weights = numpy_helper.from_array((np.random.default_rng(1).standard_normal((256, 1024)) * 0.05)
                                      .astype(np.float32), "w")
    return model_bytes([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 1024])], [weights])


def call_model() -> bytes:
    """One Neg of one value: what a call costs beyond its kernels' work (binding, allocation, the API)."""
    return model_bytes([helper.make_node("Neg", ["x"], ["y"], name="neg")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [])


def result_from_payload(payload: dict[str, Any]) -> MicrobenchResult:
    """The runner's microbenchmark JSON as a result (int8 figures are None where the runtime had no int8 kernel)."""
    ops = payload["ops_per_s"]
    return MicrobenchResult(threads=payload["threads"], matmul_fp32_ops_per_s=ops["matmul_fp32"],
                            matmul_int8_ops_per_s=ops.get("matmul_int8"), conv_fp32_ops_per_s=ops["conv_fp32"],
                            conv_int8_ops_per_s=ops.get("conv_int8"),
                            memory_bandwidth_bytes_per_s=payload["memory_bandwidth_bytes_per_s"],
                            single_thread_ops_per_s=payload.get("single_thread_ops_per_s") or {},
                            class_ops_per_s={name: rate for name, rate in ops.items() if ":" in name},
                            memory_probes=payload.get("memory_probes") or {},
                            call_overhead_s=float(payload.get("call_overhead_s") or 0.0),
                            call_best_s=float(payload.get("call_best_s") or 0.0),
                            all_core_retimed=list(payload.get("all_core_retimed") or []))


# Op-class models large enough to spread over every core. On an idle 2-core AMD EPYC (Zen 4) they ran
# 1.86-1.99x faster at two threads than at one, the fp32 GEMM peak 2.0x; a calibration disturbed during its
# all-core half (other work, a slowed vCPU: nothing /proc/stat showed) had them at 0.57-1.5x while the peaks,
# measured first, still said 2.0x, and its two-thread estimates came out up to +109% (PP-LCNet).
SCALING_CLASSES = ("conv.depthwise", "conv.1x1", "conv.thin", "conv.narrow", "conv.nchw")
# Their median speed-up, as a share of the GEMM peak's, below which the all-core timings are measured again.
MIN_SCALING_SHARE = 0.8
# One of them alone below this share has them measured again too: idle, each class's share was 0.81-1.02 on the
# same machine; one calibration had conv.1x1 at 0.70 (the others high, the median unmoved) and priced the
# 1x1-heavy MobileNetV2s 24-31% over their two-thread measurement.
MIN_ONE_CLASS_SHARE = 0.75
# A disturbance can also hit a few classes only (the stem class and two int8 ones priced 1.3-1.7x their idle
# all-core time on the same machine, the median unmoved): a convolution, MatMul or LSTM class measured slower
# at all cores than at one (idle: 1.0-2.0x faster) has the whole set measured again too.
MIN_CLASS_SPEEDUP = 0.9
_MULTIPLY_CLASSES = ("conv", "matmul", "fully_connected", "lstm")


def scaling_shares(result: MicrobenchResult) -> dict[str, float]:
    """Each of ``SCALING_CLASSES``' speed-up from one thread to ``result.threads``, as a share of the fp32 MatMul
    peak's speed-up (empty at one thread or where the peak was not measured; a class not measured is left out)."""
    from edgeopt.runtime.class_bench import CLASS_PREFIX

    one_peak = result.single_thread_ops_per_s.get("matmul_fp32")
    if result.threads <= 1 or not one_peak or result.matmul_fp32_ops_per_s <= 0:
        return {}
    peak_gain = result.matmul_fp32_ops_per_s / one_peak
    return {name: result.class_ops_per_s[key] / result.single_thread_ops_per_s[key] / peak_gain
            for name, key in ((name, CLASS_PREFIX + name) for name in SCALING_CLASSES)
            if result.class_ops_per_s.get(key) and result.single_thread_ops_per_s.get(key)}


def scaling_share(result: MicrobenchResult) -> float | None:
    """The median of ``scaling_shares`` (None where there are none)."""
    shares = scaling_shares(result)
    return statistics.median(shares.values()) if shares else None


def scaling_doubt(result: MicrobenchResult) -> str | None:
    """Why ``result``'s all-core timings look disturbed (``scaling_share``, ``MIN_ONE_CLASS_SHARE``,
    ``MIN_CLASS_SPEEDUP``), or None."""
    from edgeopt.runtime.class_bench import CLASS_PREFIX

    share = scaling_share(result)
    if share is not None and share < MIN_SCALING_SHARE:
        return (f"the op classes ran {share:.0%} as much faster on {result.threads} threads as the GEMM peak did")
    if result.threads <= 1:
        return None
    low = sorted((value, name) for name, value in scaling_shares(result).items() if value < MIN_ONE_CLASS_SHARE)
    if low:
        return (", ".join(f"{name} ran {value:.0%}" for value, name in low)
                + f" as much faster on {result.threads} threads as the GEMM peak did")
    slower = sorted(key[len(CLASS_PREFIX):] for key, rate in result.class_ops_per_s.items()
                    if key.startswith(CLASS_PREFIX) and key[len(CLASS_PREFIX):].split(".")[0].split("@")[0]
                    in _MULTIPLY_CLASSES and result.single_thread_ops_per_s.get(key)
                    and rate < MIN_CLASS_SPEEDUP * result.single_thread_ops_per_s[key])
    if slower:
        return f"{', '.join(slower)} ran slower on {result.threads} threads than on one"
    return None


def best_of(first: MicrobenchResult, second: MicrobenchResult) -> MicrobenchResult:
    """Two measurements of the same machine merged rate by rate: other work only ever slows a timing down,
    so the faster of each is the closer to what the machine does (the fixed costs: the smaller)."""

    def faster(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {key: max(v for v in (a.get(key), b.get(key)) if v is not None) for key in {*a, *b}}

    def larger(a: float | None, b: float | None) -> float | None:
        return max(v for v in (a, b) if v is not None) if a is not None or b is not None else None

    def smaller_measured(a: float, b: float) -> float:  # (0.0: not measured)
        return min(v for v in (a, b) if v) if a or b else 0.0

    return first.model_copy(update={
        "matmul_fp32_ops_per_s": max(first.matmul_fp32_ops_per_s, second.matmul_fp32_ops_per_s),
        "conv_fp32_ops_per_s": max(first.conv_fp32_ops_per_s, second.conv_fp32_ops_per_s),
        "matmul_int8_ops_per_s": larger(first.matmul_int8_ops_per_s, second.matmul_int8_ops_per_s),
        "conv_int8_ops_per_s": larger(first.conv_int8_ops_per_s, second.conv_int8_ops_per_s),
        "memory_bandwidth_bytes_per_s": max(first.memory_bandwidth_bytes_per_s, second.memory_bandwidth_bytes_per_s),
        "single_thread_ops_per_s": faster(first.single_thread_ops_per_s, second.single_thread_ops_per_s),
        "class_ops_per_s": faster(first.class_ops_per_s, second.class_ops_per_s),
        "call_overhead_s": smaller_measured(first.call_overhead_s, second.call_overhead_s),
        "call_best_s": smaller_measured(first.call_best_s, second.call_best_s),
        "all_core_retimed": sorted({*first.all_core_retimed, *second.all_core_retimed})})


def run_microbenchmarks(threads: int | None = None, budget_s: float = 1.5,
                        events: Events | None = None, checks: bool = True,
                        measure=None) -> MicrobenchResult:
    """On this machine, in this process, with the same code the device runner uses. When the all-core timings look
    disturbed (``scaling_doubt``), everything is measured once more and the faster figure of the two kept
    (``best_of``). ``measure``: bundle → runner payload (tests)."""
    from edgeopt.runtime import device_runner

    events = events or Events()
    events.note("building the models")
    bundle = microbench_bundle(threads or os.cpu_count() or 1, budget_s, checks)
    measure = measure or (lambda b: device_runner.microbench(b, progress=lambda name: events.note(f"measuring {name}")))
    result = result_from_payload(measure(bundle))
    if result.all_core_retimed:
        events.note(f"{len(result.all_core_retimed)} all-core timing(s) measured again: the other cores ran slower "
                    "at the time (another tenant of the machine?)")
    doubt = scaling_doubt(result)
    if doubt is not None:
        events.note(f"{doubt} (other work during the measurement?): measuring the all-core timings again, "
                    "the faster of each figure kept")
        result = best_of(result, result_from_payload(measure(all_core_bundle(bundle, result.call_best_s))))
    return result


def all_core_bundle(bundle: dict[str, Any], call_best_s: float) -> dict[str, Any]:
    """``bundle`` to measure the all-core timings again (``scaling_doubt``): its models at the asked thread count
    only, without the memory probes, the copy and the call's fixed cost, which the doubt is not about (measured
    again too, they made a doubted calibration take twice as long: 30 s instead of 15 on a 2-core VM). The first
    measurement's best call (``call_best_s``) is set apart from every rate, as it was the first time."""
    return {**bundle, "models": [{**item, "one_thread": False} for item in bundle["models"]],
            "memory_probes": [], "call_model_b64": None, "call_best_s": call_best_s, "bandwidth_mb": 0}


def parallel_conv_overhead(result: MicrobenchResult, one_thread_us: float | None) -> float | None:
    """A float Conv's dispatch at the calibration's thread count (None at one thread or unmeasured): the dispatch
    model alternates 1x1 Convs and Adds, and only the Convs pay more with a thread pool (an Add, an activation, a
    small MatMul or an int8 Conv measured no extra), so the Convs carry twice the model's per-node increase."""
    from edgeopt.runtime.class_bench import dispatch_overhead_us

    at_all = dispatch_overhead_us(result.class_ops_per_s)
    if result.threads <= 1 or at_all is None or one_thread_us is None:
        return None
    return round(one_thread_us + 2 * max(0.0, at_all - one_thread_us), 3)


# The int8 MatMul class model's gain from more threads beside the int8 peak's places the work at which a MatMul
# gains half of it (analysis.profile.PARALLEL_HALF_WORK): ``g = 1 + (r - 1) w / (w + h)`` solved for h. No gain
# (within noise) or one as large as the peak's: the bounds.
HALF_WORK_BOUNDS = (1e4, 1e9)
_NO_GAIN = 1.02


def int8_matmul_half_work(result: MicrobenchResult) -> dict[str, float]:
    """{"matmul@int8": h, "fully_connected@int8": h} from the one-row int8 MatMul class model at one thread and at
    ``result.threads`` (empty at one thread or where either was not measured)."""
    from edgeopt.runtime.class_bench import CLASS_PREFIX, class_models

    key = CLASS_PREFIX + "matmul.row@int8"
    all_cores, one = result.class_ops_per_s.get(key), result.single_thread_ops_per_s.get(key)
    peak_all, peak_one = result.matmul_int8_ops_per_s, result.single_thread_ops_per_s.get("matmul_int8")
    if result.threads <= 1 or not (all_cores and one and peak_all and peak_one):
        return {}
    gain, full = all_cores / one, peak_all / peak_one
    work = class_models()["matmul.row@int8"][1] / 2  # MACs
    if gain <= _NO_GAIN:
        half = HALF_WORK_BOUNDS[1]
    elif gain >= full:
        half = HALF_WORK_BOUNDS[0]
    else:
        half = min(max(work * ((full - 1) / (gain - 1) - 1), HALF_WORK_BOUNDS[0]), HALF_WORK_BOUNDS[1])
    half = float(f"{half:.3g}")
    return {"matmul@int8": half, "fully_connected@int8": half}


def calibrated_profile(base: TargetProfile, result: MicrobenchResult, when: str,
                       where: str | None = None, device: str | None = None) -> TargetProfile:
    """``base`` with peaks, bandwidth and per-op efficiency replaced by measurements
    (``where``: the SSH host they were taken on, when not this machine; ``device``: what it is)."""
    from edgeopt.analysis.profile import NODE_OVERHEAD_US
    from edgeopt.runtime.class_bench import (
        check_errors,
        dispatch_overhead_us,
        fitted_efficiency,
        kernel_bandwidth,
    )
    from edgeopt.runtime.class_refit import refit_through_estimates, solve_element_kinds
    from edgeopt.targets import EstimateError, PeakThroughput

    def peaks_of(rates: dict[str, float | None]) -> PeakThroughput | None:
        """The larger of the MatMul and Conv figures per dtype (None without both fp32 figures)."""
        if not (rates.get("matmul_fp32") and rates.get("conv_fp32")):
            return None
        int8_values = [v for v in (rates.get("matmul_int8"), rates.get("conv_int8")) if v]
        return PeakThroughput(fp32=max(rates["matmul_fp32"], rates["conv_fp32"]),
                              int8=max(int8_values) if int8_values else None)

    full = peaks_of({"matmul_fp32": result.matmul_fp32_ops_per_s, "conv_fp32": result.conv_fp32_ops_per_s,
                     "matmul_int8": result.matmul_int8_ops_per_s, "conv_int8": result.conv_int8_ops_per_s})
    assert full is not None and full.fp32 is not None  # both fp32 figures are required fields
    fp32, int8 = full.fp32, full.int8
    single = full if result.threads == 1 else peaks_of(dict(result.single_thread_ops_per_s))

    def measured(matmul: float, conv: float, rates: dict[str, float], fp32_peak: float,
                 int8_peak: float | None) -> dict[str, float]:
        """The efficiency table at one thread count: MatMul and Conv against the peak, then every op class."""
        return {"matmul": round(matmul / fp32_peak, 3), "fully_connected": round(matmul / fp32_peak, 3),
                "conv": round(conv / fp32_peak, 3), **fitted_efficiency(rates, fp32_peak, int8_peak)}

    efficiency = {**base.efficiency, **measured(result.matmul_fp32_ops_per_s, result.conv_fp32_ops_per_s,
                                                result.class_ops_per_s, fp32, int8)}
    # the same fit at one thread, against the one-thread peaks (classes scale with threads unlike the peaks)
    one = result.single_thread_ops_per_s
    single_efficiency = (measured(one["matmul_fp32"], one["conv_fp32"], one, single.fp32, single.int8)
                         if result.threads > 1 and single is not None and single.fp32 and one.get("matmul_fp32")
                         and one.get("conv_fp32") else {})
    # one node's dispatch, measured at one thread where it was (estimates price nodes one after another)
    dispatch_us = dispatch_overhead_us(result.single_thread_ops_per_s) or dispatch_overhead_us(result.class_ops_per_s)
    overhead_us = dispatch_us if dispatch_us is not None else base.node_overhead_us or NODE_OVERHEAD_US
    bandwidth = kernel_bandwidth(result.class_ops_per_s, result.single_thread_ops_per_s, overhead_us)
    on = f" --ssh {where}" if where else ""
    from edgeopt.runtime.memory_probes import runtime_memory_from_probes

    runtime_memory = runtime_memory_from_probes(
        result.memory_probes, f"measured by `edgeopt targets calibrate {base.name}{on}` on {when}: memory probes "
                              "(one-op and thousand-node sessions, Conv, MatMul and LSTM weights, an activation "
                              "chain) in fresh processes")
    source = (f"measured by `edgeopt targets calibrate {base.name}{on}` on {when} with {result.threads} thread(s)"
              + (" and with 1" if result.threads > 1 and single else "") + ": "
              "MatMul 512^3 and Conv 64->64 3x3 at 56x56 in onnxruntime (fp32 and QDQ int8), large copy"
              + ("; the fixed cost of a call (a one-node model)" if result.call_overhead_s else "")
              + ("; one node's dispatch (a chain of 1x1 Convs and Adds on a 16-channel 1x1 map)"
                 if dispatch_us is not None else "")
              + ("; op-class models and kernel read bandwidths (runtime.class_bench)" if result.class_ops_per_s else "")
              + (f"; device: {device}" if device else ""))
    profile = base.model_copy(update={
        "peak_ops_per_s": PeakThroughput(fp32=fp32, fp16=base.peak_ops_per_s.fp16, int8=int8),
        "peak_threads": result.threads,
        "single_thread_peak_ops_per_s": single,
        "memory_bandwidth_bytes_per_s": result.memory_bandwidth_bytes_per_s,
        "kernel_bandwidth": bandwidth or base.kernel_bandwidth,
        "efficiency": efficiency,
        "single_thread_efficiency": single_efficiency,
        "runtime_memory": runtime_memory or base.runtime_memory,
        # the one-node call less the dispatch overhead the estimate already gives that node
        "call_overhead_us": (round(max(0.0, result.call_overhead_s * 1e6 - overhead_us), 2)
                             if result.call_overhead_s else base.call_overhead_us),
        "node_overhead_us": dispatch_us if dispatch_us is not None else base.node_overhead_us,
        "parallel_conv_overhead_us": parallel_conv_overhead(result, dispatch_us) or base.parallel_conv_overhead_us,
        "parallel_half_macs": {**base.parallel_half_macs, **int8_matmul_half_work(result)},
        "sources": (*[s for s in base.sources if not s.startswith("measured by `edgeopt")], source),
        "notes": (base.notes + " " if base.notes else "") + f"Calibrated {when}.",
    })
    profile = solve_element_kinds(profile, result.class_ops_per_s, result.single_thread_ops_per_s, result.threads)
    profile = refit_through_estimates(profile, result.class_ops_per_s, result.single_thread_ops_per_s, result.threads)
    errors = check_errors(result.class_ops_per_s, profile, result.threads, result.call_best_s)
    if not errors:
        return profile
    worst = max(abs(e) for e in errors.values())
    checked = ", ".join(f"{name} {error:+.0%}" for name, error in errors.items())
    note = (f" Held-out check ({len(errors)} models priced with these figures and timed at {result.threads} "
            f"thread(s)): {checked}.")
    update: dict[str, Any] = {"notes": profile.notes + note}
    if where:  # a device: its own check is the only validation its estimates have
        update["estimate_error"] = EstimateError(
            latency=max(0.05, round(worst, 2)), source=f"`edgeopt targets calibrate {base.name} --ssh {where}` on "
                                                       f"{when}: largest error on {len(errors)} held-out models")
    return profile.model_copy(update=update)
