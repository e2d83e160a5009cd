"""The static profile of a model on a target: per-node cost, a roofline latency estimate,
memory fit and accelerator placement, all without running the model.

It reads the format-neutral graph (graph.model) a format's adapter builds: for ONNX,
graph/onnx_adapter.py. Per node (main graph, in node order = execution order):

* ``execution_dtype``, role, op kind and ``macs`` from the adapter (ONNX: QDQ-aware,
  DQ -> Conv/MatMul/... -> Q runs int8 and its fused Q/DQ nodes cost 0; an If/Loop/Scan
  node carries the MACs of its body, If: the larger branch, Loop: the body once).
* bytes read and written from :func:`~edgeopt.analysis.memory.node_traffic`, on the
  tensors that really exist (the int8 ones inside a fused QDQ group).
* ``device`` from :func:`~edgeopt.analysis.placement.place_nodes`.
* time, by the roofline::

      compute_s = 2 * macs / (peak_ops_per_s[dtype] * efficiency)
      memory_s  = (bytes_read + bytes_written) / memory_bandwidth_bytes_per_s
                  (a calibrated CPU: the bandwidth its kernels read at, by thread count, from cache for the
                   weights of a model within half the last-level cache and for activations within L2; where it
                   measured reads at several working sets, activations at their working set's rate, the
                   one-thread curve scaled by threads as DRAM reads scale, the copy bandwidth at DRAM's rate)
      (an op without MACs whose kind the target measured, `targets calibrate`: compute_s = output elements /
       (fp32 peak * efficiency[kind]), the kind's element rate; a pool's output elements times its window's taps)
      time_us   = max(compute_s, memory_s) * 1e6 + node_overhead_us
                  (+ the weights' DRAM time for a compute-bound node whose weights exceed the CPU's
                   last-level cache: that stream does not overlap the compute)
      (on a calibrated CPU, a broadcasting elementwise op adds each run of onnxruntime's broadcasting loop
       beyond the first to compute_s, analysis.broadcast; an int8 convolution shallower than its family's
       reference runs at its depth's efficiency, analysis.conv_depth)

  ``bound`` says which term won ("compute" or "memory"); "none" for nodes that do not
  run (Constants, fused Q/DQ: time 0, no overhead); "unknown" when the node's cost or
  the target's figures are unknown. ``efficiency`` is ``target.efficiency[kind]`` (the op
  kind: ``conv`` for Conv, QLinearConv and FusedConv alike; ``conv.depthwise`` first where
  stated; at the priced thread count, `targets.efficiency_at`, where the target measured a
  one-thread table too), else ``efficiency["default"]``, else 1.0 (recorded in ``assumptions``). The overhead
  stands for kernel dispatch (argument checks, output allocation, thread-pool wake-up): the target's measured
  ``node_overhead_us`` (`targets calibrate`: 0.6 µs per node on an AVX-512 Xeon with onnxruntime 1.32), else
  :data:`NODE_OVERHEAD_US`; a float Conv at more than one thread its ``parallel_conv_overhead_us`` (2.2 µs
  there at two: its kernel wakes the thread pool whatever its size).

Peaks: a node on the accelerator uses ``accelerator.peak_ops_per_s``, a node on the CPU
uses ``cpu_target``'s peaks at the ``threads`` priced (the target itself unless a separate
host-CPU profile is passed; ``targets.peaks_at``: all cores by default). At more than one thread an x86
node gains from them by its work (PARALLEL_HALF_WORK: a small node runs at its one-thread speed). A missing figure
for the node's dtype falls back to the fp32 peak (recorded in ``assumptions``). Both devices use the target's memory bandwidth (the
schema has no accelerator bandwidth). When a needed peak or the bandwidth is missing
altogether (``host`` before calibration), every estimate is None and
``estimate_unavailable_reason`` says what is missing.

Totals: ``latency_ms`` = sum of node times + hand-overs x ``partition_switch_us`` + the CPU profile's
``call_overhead_us`` (the fixed cost of one call, measured by `targets calibrate`);
nodes whose cost is unknown (custom ops, unknown shapes) are left out and listed in
``unknown_nodes``.

Over 600 lines because the report models (``StaticProfile`` and its rows) and the cost model
that fills them are one contract; the per-node arithmetic is in macs/memory/placement already.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgeopt.analysis.broadcast import BROADCASTING_OPS, span_count
from edgeopt.analysis.conv_depth import DEPTH_ANCHORS, GEMM_POSITIONS_ANCHOR, LSTM_STEPS_ANCHOR, anchored_factor
from edgeopt.analysis.conv_working_set import DEPTHWISE_REFERENCE_BYTES, WORKING_SET_ANCHORS, working_set_factor
from edgeopt.analysis.memory import MemoryPlan, NodeTraffic, liveness_plan, node_traffic, resolve_alias
from edgeopt.analysis.runtime_memory import RuntimeMemoryEstimate, default_runtime_memory, estimate_runtime_memory
from edgeopt.analysis.tflite_memory import estimate_tflite_memory
from edgeopt.analysis.placement import Placement, place_nodes
from edgeopt.analysis.validation import expected_error
from edgeopt.graph.build import build_graph
from edgeopt.graph.model import Graph, Node, tensor_size_bytes
from edgeopt.runtime.class_bench import INT8_CONV_CLASS_MACS, INT8_ROW_CLASS_MACS
from edgeopt.targets import (PeakThroughput, TargetProfile, bandwidth_at, efficiency_at, peaks_at,
                             reorder_bandwidth_at, stream_bandwidth_at, weight_bandwidth_at)
from edgeopt.units import plural

__all__ = [
    "NODE_OVERHEAD_US",
    "FitCheck",
    "NodeProfile",
    "StaticProfile",
    "static_profile",
]

NODE_OVERHEAD_US = 2.0
"""Fixed cost added to every node that runs as its own kernel (µs); see the module doc."""

Bound = Literal["compute", "memory", "unknown", "none"]
TopKey = Literal["time_us", "macs", "bytes"]

_PEAK_KEYS = ("fp32", "fp16", "int8")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeProfile(_Frozen):
    """One main-graph node. Times in µs; None when unknown (see ``cost_unknown_reason``)."""

    index: int
    name: str
    op_type: str  # the format's own operator name
    domain: str
    kind: str = ""  # the op kind targets price (graph.kinds); "" in reports written before kinds
    role: Literal["compute", "qdq", "fused_qdq", "fused_activation", "constant"]
    # "depthwise" / "narrow" / "thin" / "1x1" for convolutions, "gemm" off onnxruntime's NCHWc path on x86;
    # "integer_u8" (dynamic int8)
    op_class: str | None = None
    fused_into: str | None  # fused Q/DQ: the node whose kernel it is part of
    device: Literal["cpu", "accelerator"]
    execution_dtype: str | None  # "fp32", "fp16", "int8", ... ("int64" for shape arithmetic)
    macs: int | None
    weight_bytes_read: int
    activation_bytes_read: int
    bytes_read: int
    bytes_written: int
    unknown_size_tensors: list[str]  # counted as 0 bytes above
    compute_time_us: float | None
    memory_time_us: float | None
    overhead_us: float
    time_us: float | None
    bound: Bound
    peak_ops_per_s: float | None  # the peak the compute time used
    efficiency: float | None
    cost_unknown_reason: str | None
    # layout copies the runtime adds around this node (onnxruntime's NCHWc reorders on x86), in time_us
    layout_copy_bytes: int = 0
    layout_copy_us: float = 0.0
    # runs of onnxruntime's broadcasting loop (analysis.broadcast) beyond the first, priced in compute_time_us
    broadcast_spans: int = 0
    broadcast_span_us: float = 0.0

    @property
    def bytes_total(self) -> int:
        return self.bytes_read + self.bytes_written


class FitCheck(_Frozen):
    """``required_bytes`` of ``contents`` against a memory; ``fits`` None if its size is unknown."""

    memory: Literal["ram", "sram", "accelerator_sram", "flash"]
    contents: str
    required_bytes: int
    available_bytes: int | None
    fits: bool | None


class StaticProfile(_Frozen):
    """Static cost of a model on a target; ``model_dump(mode="json")`` gives plain JSON."""

    target: str
    target_kind: str
    accelerator: str | None
    input_shapes: dict[str, list[int]]  # the concrete shapes everything was computed for
    node_overhead_us: float
    nodes: list[NodeProfile]
    threads: int | None = None  # the CPU's intra-op threads the latency is priced at (None: reports before it)
    # the expected relative error of latency_ms and of the runtime's peak memory (0.33: ±33%), from validation
    # against measurements (analysis.validation); None where nothing validated this target's estimates
    latency_error: float | None = None
    memory_error: float | None = None
    error_source: str | None = None
    # latency
    latency_ms: float | None
    nodes_latency_ms: float | None
    switch_latency_ms: float | None
    call_overhead_ms: float | None = None  # the target's fixed cost of one call, in latency_ms (None: not counted)
    latency_by_device_ms: dict[str, float]
    estimate_unavailable_reason: str | None
    # work and memory
    macs_total: int
    memory_traffic_bytes: int
    weight_bytes: int
    weight_bytes_by_dtype: dict[str, int]
    peak_activation_bytes: int
    peak_activation_node: str | None
    peak_activation_is_lower_bound: bool
    fits: list[FitCheck]
    fits_all: bool | None  # None when no memory size is known
    # memory as the runtime allocates it (analysis.runtime_memory); None where it does not apply (MCUs, TFLite)
    runtime_memory: RuntimeMemoryEstimate | None = None
    # nodes whose cost could not be computed (left out of latency_ms and macs_total)
    unknown_nodes: list[str]
    unknown_node_count: int
    # accelerator placement (0 partitions without an accelerator)
    partitions: int
    handovers: int
    accelerator_node_count: int
    cpu_node_count: int
    cpu_fallback: dict[str, str]  # node -> why it is not on the accelerator
    full_int8: bool
    full_int8_required: bool
    full_int8_offenders: list[str]
    assumptions: list[str]
    warnings: list[str]

    def top_nodes(self, n: int = 10, by: TopKey | None = None) -> list[NodeProfile]:
        """The ``n`` heaviest nodes, by estimated time (or MACs when there is no estimate),
        MACs or bytes moved; nodes with nothing to show are left out."""
        key: TopKey = by or ("time_us" if self.latency_ms is not None else "macs")

        def value(node: NodeProfile) -> float:
            if key == "time_us":
                return node.time_us or 0.0
            if key == "macs":
                return float(node.macs or 0)
            return float(node.bytes_total)

        ranked = sorted((node for node in self.nodes if value(node) > 0), key=lambda x: -value(x))
        return ranked[: max(n, 0)]

    def node(self, name: str) -> NodeProfile:
        """The row of the node called ``name`` (KeyError if there is none)."""
        for row in self.nodes:
            if row.name == name:
                return row
        raise KeyError(name)


# ---------------------------------------------------------------------- node costs


def _peak_for(peaks: PeakThroughput, dtype: str | None) -> tuple[float | None, bool]:
    """(peak ops/s, True if the fp32 figure stood in for the dtype's)."""
    if dtype in _PEAK_KEYS:
        value = getattr(peaks, dtype)
        if value:
            return value, False
    return (peaks.fp32, True) if peaks.fp32 else (None, False)


# Defaults where a target states nothing (a calibrated target measures its own, runtime/class_bench.py), measured
# on this project's x86 CI machine (achieved fraction of the calibrated peak in real models):
# recurrent cells are sequential matrix-vector steps; depthwise and 1x1 convolutions reach a
# fraction of what a dense 3x3 conv does.
DEFAULT_EFFICIENCY = {"lstm": 0.5, "gru": 0.5, "rnn": 0.5}
CLASS_FACTOR = {("conv.depthwise", "fp32"): 0.32, ("conv.depthwise", "int8"): 0.13,
                ("conv.1x1", "fp32"): 0.75, ("conv.1x1", "int8"): 0.76,
                # few output channels leave most SIMD lanes idle: kernels compute 16 outputs per pass (two
                # 8-lane vectors), so one output uses 1/16 of them and 8 outputs half (measured: 0.05 and 0.37)
                ("conv.narrow", "fp32"): 1 / 16, ("conv.thin", "fp32"): 0.5,
                # im2col and a GEMM off the NCHWc path (measured 0.5-0.9 of an NCHWc Conv's rate, 0.7 typical)
                ("conv.gemm", "fp32"): 0.7,
                # a depthwise Conv off the NCHWc path (72 channels on AVX-512): 0.55 of the blocked one
                ("conv.depthwise.gemm", "fp32"): 0.18,
                # a blocked Conv reading a plain NCHW input of fewer channels than a block (an RGB stem): 119 G
                # FLOP/s for 3 -> 32 channels against ~200 blocked (AVX-512, one thread), the input read apart
                ("conv.nchw", "fp32"): 0.6,
                # the same kernel for a 1x1 Conv: one tap per input channel and output position, its loop's cost
                # beside each FMA (AMD EPYC, AVX-512, one thread: 14-20 G MAC/s for 3-12 inputs, 16-96 outputs,
                # against 40-52 for 3x3 kernels of the same channels)
                ("conv.nchw.1x1", "fp32"): 0.23}


def _efficiency(table: Mapping[str, float], kind: str, op_class: str | None = None,
                dtype: str | None = None, cpu: bool = True) -> float | None:
    """The fraction of the peak a node reaches: what the profile's ``table`` (its efficiency at the priced thread
    count) states for its kind (and class), else the defaults above, which were measured on CPUs and so are never
    applied to an accelerator's nodes."""
    dtype = dtype or "fp32"
    refined = f"{kind}.{op_class}" if op_class else None
    for key in ([f"{refined}@{dtype}", refined] if refined else []) + [f"{kind}@{dtype}"]:
        stated = table.get(key)
        if stated:
            return stated
    factor = CLASS_FACTOR.get((refined, dtype), 1.0) if refined and cpu else 1.0
    for key in (kind, "default"):
        value = table.get(key)
        if value is not None and value > 0:
            return value * factor
    if not cpu:
        return None
    default = DEFAULT_EFFICIENCY.get(kind)
    if default is not None:
        return default
    return CLASS_FACTOR.get((refined, dtype)) if refined else None


def layout_block(profile: TargetProfile) -> int | None:
    """The channel block onnxruntime's NCHWc kernels use on this CPU: 16 with AVX-512F, 8 with AVX2 (x86 only)."""
    if profile.runtime != "onnxruntime" or profile.kind != "cpu" or profile.arch.lower() not in ("x86_64", "amd64"):
        return None
    features = set(profile.isa_features)
    return 16 if "avx512f" in features else 8 if "avx2" in features else None


def _fits(
    target: TargetProfile, weights: int, peak: int, runtime: RuntimeMemoryEstimate | None = None
) -> list[FitCheck]:
    both = "weights + peak activations"

    def check(memory: str, contents: str, required: int, available: int | None) -> FitCheck:
        fits = None if available is None else required <= available
        return FitCheck(
            memory=memory, contents=contents, required_bytes=required,  # type: ignore[arg-type]
            available_bytes=available, fits=fits,
        )

    acc = target.accelerator
    checks: list[FitCheck] = []
    if runtime is not None and runtime.total_bytes is not None:
        checks.append(check("ram", "the runtime's peak (interpreter + session, weights as loaded, arena)",
                            runtime.total_bytes, target.ram_bytes))
    elif runtime is not None:
        checks.append(check("ram", "the runtime's peak (session, weights as loaded, arena)",
                            runtime.peak_increase_bytes, target.ram_bytes))
    elif target.kind != "mcu" or target.ram_bytes is not None:
        checks.append(check("ram", both, weights + peak, target.ram_bytes))
    if target.kind == "mcu":
        # Weights stay in flash (read in place), activations live in SRAM.
        checks.append(check("sram", "peak activations", peak, target.sram_bytes))
        checks.append(check("flash", "weights", weights, acc.flash_bytes if acc else None))
    else:
        if target.sram_bytes is not None:
            checks.append(check("sram", both, weights + peak, target.sram_bytes))
        if acc is not None and acc.flash_bytes is not None:
            checks.append(check("flash", "weights", weights, acc.flash_bytes))
    if acc is not None and acc.sram_bytes is not None:
        checks.append(check("accelerator_sram", both, weights + peak, acc.sram_bytes))
    return checks


@dataclass(frozen=True)
class _Figures:
    """What prices a node on one device: its peaks, the bandwidth, the efficiency table."""

    label: str
    peaks: PeakThroughput
    bandwidth: float | None
    owner: TargetProfile  # whose ``efficiency`` applies
    cache_bytes: int | None = None  # the last-level cache: weights beyond it stream from DRAM on every run
    # the bandwidth of reads that stay in cache (weights of a model within half the last-level cache, a node's
    # activations within L2), where measured; None: ``bandwidth`` for everything
    cache_bandwidth: float | None = None
    weights_resident: bool = False
    l2_bytes: int | None = None
    weight_bandwidth: float | None = None  # weights streamed from DRAM as kernels read them; None: ``bandwidth``
    # whether a node's weights of this many bytes stream at DRAM's rate, by the measured working-set rates
    # (None: the last-level cache size decides)
    streams_from_dram: Callable[[int], bool] | None = None
    # the rate at which a node moves activations (or a layout copy its bytes) of a working set this large, where the
    # measured working-set rates tell it apart from DRAM's; None there (and where not measured): ``l2_bytes`` decides
    activation_rate: Callable[[int], float | None] | None = None
    # the rate of an NCHWc reorder moving this many bytes, where calibration timed the reorder kernels (None: the
    # activation rate prices it)
    reorder_rate: Callable[[int], float | None] | None = None
    # the rate of an element-wise op reading and writing this many bytes, where calibration timed such ops beyond
    # L2 (None: the activation rate prices it)
    stream_rate: Callable[[int], float | None] | None = None
    efficiency: Mapping[str, float] | None = None  # the owner's table at the priced thread count; None: as stated

    def owner_efficiency(self) -> Mapping[str, float]:
        """The efficiency table that prices this device's nodes (at the priced thread count where measured)."""
        return self.owner.efficiency if self.efficiency is None else self.efficiency

    def missing(self, macs: int | None, dtype: str | None) -> list[str]:
        """What this device lacks to price a node with ``macs`` MACs in ``dtype``."""
        texts = []
        if self.bandwidth is None:
            texts.append(f"target '{self.owner.name}' states no memory_bandwidth_bytes_per_s")
        if macs and _peak_for(self.peaks, dtype)[0] is None:
            wanted = "fp32" if dtype in ("fp32", None) else f"{dtype} nor fp32"
            texts.append(f"{self.label} states no peak_ops_per_s ({wanted})")
        return texts


def _node_facts(node: Node, traffic: NodeTraffic, device: str, names: Mapping[int, str]) -> dict[str, Any]:
    """The NodeProfile fields that do not depend on the target's figures."""
    facts: dict[str, Any] = {
        "index": node.index,
        "name": node.name,
        "op_type": node.op_type,
        "domain": node.domain,
        "kind": node.kind,
        "op_class": node.op_class,
        "role": node.role,
        "fused_into": (
            names.get(node.attached_to)
            if node.role in ("fused_qdq", "fused_activation") and node.attached_to is not None
            else None
        ),
        "device": device,
        "execution_dtype": node.dtype,
        "unknown_size_tensors": [],
        "cost_unknown_reason": None,
    }
    if not node.runs_alone:  # Constant / fused Q/DQ: no kernel of their own
        facts.update(macs=0, weight_bytes_read=0, activation_bytes_read=0, bytes_read=0, bytes_written=0)
        return facts
    reason = node.cost_unknown_reason
    if reason is None and not traffic.known:
        unknown = list(traffic.unknown_tensors)
        reason = f"size of {plural(len(unknown), 'tensor')} unknown: {_names(unknown, 3)}"
    facts.update(
        macs=node.macs,
        weight_bytes_read=traffic.weight_bytes_read,
        activation_bytes_read=traffic.activation_bytes_read,
        bytes_read=traffic.bytes_read,
        bytes_written=traffic.bytes_written,
        unknown_size_tensors=list(traffic.unknown_tensors),
        cost_unknown_reason=reason,
    )
    return facts


def _recurrent_rereads(graph: Graph) -> dict[int, tuple[int, int]]:
    """Node index -> (bytes its recurrent weight is read again after the first step, the bytes one direction
    keeps re-reading) for recurrent cells with a constant recurrent weight (input 2) and known steps. A step's
    product of the hidden state by that weight cannot start before the last step's ends, so it is streamed
    again at every step (ddddocr's recognizer: an 8 MiB bidirectional LSTM weight over 24 steps, 7.9 ms of its
    16 measured, priced at 0.6 ms as one read)."""
    found: dict[int, tuple[int, int]] = {}
    for node in graph.nodes:
        if not node.recurrent_steps or node.recurrent_steps < 2 or len(node.inputs) < 3 or not node.runs_alone:
            continue
        name = resolve_alias(node.inputs[2], graph.aliases)
        tensor = graph.tensors.get(name)
        size = tensor_size_bytes(tensor) if name in graph.weights else None
        if not size or tensor is None or not tensor.shape:
            continue
        directions = max(1, tensor.shape[0]) if len(tensor.shape) == 3 else 1
        found[node.index] = ((node.recurrent_steps - 1) * size, size // directions)
    return found


def _roofline(facts: Mapping[str, Any], fig: _Figures, overhead_us: float, elements: int | None = None
              ) -> dict[str, Any]:
    """Time fields of a node whose cost and figures are known (see the module doc); ``elements``: its largest
    output's element count, what an op without MACs is priced by where the target measured its kind's rate."""
    macs = facts["macs"] or 0
    compute_s = 0.0
    peak: float | None = None
    fell_back = False
    table = fig.owner_efficiency()
    efficiency = _efficiency(table, facts["kind"], facts.get("op_class"), facts["execution_dtype"],
                             cpu=facts["device"] == "cpu") if macs else None
    if macs:
        peak, fell_back = _peak_for(fig.peaks, facts["execution_dtype"])
        assert peak is not None  # checked before pricing
        compute_s = 2 * macs / (peak * (efficiency or 1.0))
    elif (priced := _element_time_s(facts, fig, elements)) is not None:
        # a transcendental or a reduction per element costs more than its bytes
        compute_s, efficiency = priced
        peak = fig.peaks.fp32
    assert fig.bandwidth is not None  # checked before pricing
    activation_bytes = facts["bytes_read"] - facts["weight_bytes_read"] + facts["bytes_written"]
    cached = fig.cache_bandwidth or fig.bandwidth
    # an op without MACs writes what it reads: at the element-wise ops' measured rate for its working set
    activation_rate = (_writing_rate(fig, activation_bytes) if not macs and facts["device"] == "cpu"
                       else _activation_rate(fig, activation_bytes))
    memory_s = (facts["weight_bytes_read"] / (cached if fig.weights_resident else fig.weight_bandwidth or fig.bandwidth)
                + activation_bytes / activation_rate)
    # weights larger than the last-level cache (or, where measured, of a size read at DRAM's rate) are read from
    # DRAM on every run, and a compute-bound kernel does not hide that stream (measured: a 34 MB classifier Gemm
    # takes compute + stream, not the larger of the two; 3.1 ms against 1.8 + 1.2 on a VM reporting 480 MiB of L3)
    streamed_s = 0.0
    weights = facts["weight_bytes_read"]
    beyond_cache = bool(fig.cache_bytes and weights > fig.cache_bytes) or bool(
        weights and fig.streams_from_dram is not None and fig.streams_from_dram(weights))
    if beyond_cache and compute_s > memory_s:
        streamed_s = facts["weight_bytes_read"] / (fig.weight_bandwidth or fig.bandwidth)
    return {
        "compute_time_us": compute_s * 1e6,
        "memory_time_us": memory_s * 1e6,
        "overhead_us": overhead_us,
        "time_us": (max(compute_s, memory_s) + streamed_s) * 1e6 + overhead_us,
        "bound": "compute" if compute_s and compute_s >= memory_s else "memory",
        "peak_ops_per_s": peak,
        "efficiency": efficiency,
        "peak_fallback": fell_back,
    }


def _activation_rate(fig: _Figures, working_set: int) -> float:
    """Bytes per second at which a CPU node reads and writes ``working_set`` bytes of activations: the measured
    working-set rate (log-linear between the calibrated sizes) where it is above DRAM's, else the cache's rate
    within L2 and the copy bandwidth beyond. A step at L2 alone priced a Mul over 2.9 MB (PP-OCRv4's recognizer)
    at the copy rate, 120 µs against 76 measured, and a Div over 1.9 MB at the cache's, 17 µs against 54."""
    measured = fig.activation_rate(working_set) if fig.activation_rate is not None else None
    if measured:
        return measured
    assert fig.bandwidth is not None  # checked before pricing
    within_l2 = bool(fig.l2_bytes and working_set <= fig.l2_bytes)
    return (fig.cache_bandwidth or fig.bandwidth) if within_l2 else fig.bandwidth


def _writing_rate(fig: _Figures, working_set: int) -> float:
    """Bytes per second at which a CPU op that writes what it reads moves ``working_set`` bytes: the element-wise
    ops' measured curve where calibration timed it at that size, else the activation rate."""
    return (fig.stream_rate(working_set) if fig.stream_rate is not None else None) or \
        _activation_rate(fig, working_set)


def _layout_copy_us(copies: Sequence[int], fig: _Figures) -> float:
    """The time of a node's layout copies (each one's bytes read and written), each at the reorder kernels' rate
    at its size where calibration timed them, else at its working set's activation rate. Measured at one thread
    (AVX-512 Xeon, 24.6 GB/s copy bandwidth, 2 MiB L2): PP-OCRv4's recognizer moves 2 MB per reorder at 35-65
    GB/s (1.5 ms in all, where the copy bandwidth had priced 3.5), PicoDet's reorders of 4-8 MB ran at 24-29
    GB/s; on an AMD EPYC the weight-read curve priced PicoDet's at 76 GB/s, measured 31."""
    def rate(copy: int) -> float:
        return (fig.reorder_rate(copy) if fig.reorder_rate is not None else None) or _activation_rate(fig, copy)

    return sum(copy / rate(copy) for copy in copies) * 1e6


def _channels_last_copy_us(copies: Sequence[tuple[str, int]], fig: _Figures) -> float:
    """The time of the 8-bit Transposes around a node's channels-last int8 region, each at its kind's element rate
    at the figures' thread count where calibration timed it (runtime.element_bench), else by its bytes as a reorder.
    Measured (AMD EPYC, onnxruntime 1.32; [1, 128, 28, 28]): 3.9 µs into channels-last and 8.0 out of it at one
    thread, where the reorders' rate priced both 3.4; 7.2 and 11.2 at two threads, where it had priced 1.9."""
    table = fig.owner_efficiency()
    total = 0.0
    for kind, elements in copies:
        rate = table.get(kind)
        total += (elements / (fig.peaks.fp32 * rate) * 1e6 if rate and fig.peaks.fp32
                  else _layout_copy_us((2 * elements,), fig))
    return total


def _add_compute_time(times: dict[str, Any], extra_us: float) -> None:
    """More compute time for a node the roofline priced: its time grows by what the larger side grows by."""
    before = max(times["compute_time_us"], times["memory_time_us"])
    times["compute_time_us"] += extra_us
    times["time_us"] += max(times["compute_time_us"], times["memory_time_us"]) - before
    if times["compute_time_us"] >= times["memory_time_us"]:
        times["bound"] = "compute"


def _scale_compute(times: dict[str, Any], cost: float) -> None:
    """The node's compute costs ``cost`` times what it was priced at: its efficiency divided by that, its time
    grown by it."""
    if times["efficiency"]:
        times["efficiency"] /= cost
    _add_compute_time(times, times["compute_time_us"] * (cost - 1))


def _add_memory_time(times: dict[str, Any], extra_us: float) -> None:
    """More memory time for a node the roofline priced: its time grows by what the larger side grows by."""
    before = max(times["compute_time_us"], times["memory_time_us"])
    times["memory_time_us"] += extra_us
    times["time_us"] += max(times["compute_time_us"], times["memory_time_us"]) - before
    if times["memory_time_us"] > times["compute_time_us"]:
        times["bound"] = "memory"


# Activations that run inside the kernel they are fused into, each element still computed (the ones folded into
# a Conv's weights at load, BatchNormalization and constant Add/Mul, cost nothing at run time).
RUN_FUSED = frozenset({"sigmoid", "tanh", "hard_sigmoid", "hard_swish", "leaky_relu", "relu", "clip"})


# onnxruntime runs an If as a call into its branch's own session state (feeds, fetches, an execution frame):
# measured (AMD EPYC, one thread, onnxruntime 1.32) 2.0 µs over the same nodes in the main graph, where a node's
# dispatch is 0.4-0.7 µs; silero-vad runs six nested Ifs per call (estimate 13% under its measurement without them)
IF_RUN_NODE_OVERHEADS = 3.0
# Reductions run a loop per output element whatever they compute (runtime.element_bench.REDUCE_SHAPE): one element
# rate, ReduceSum's, prices them all by their outputs; a long reduced axis stays priced by its bytes (the larger)
REDUCTION_KINDS = frozenset({"reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "reduce_l1",
                             "reduce_l2", "reduce_sum_square", "reduce_log_sum", "reduce_log_sum_exp"})
REDUCTION_KEY = "reduce"


def _element_time_s(facts: Mapping[str, Any], fig: _Figures, elements: int | None) -> tuple[float, float] | None:
    """(seconds, efficiency) of a CPU node priced by its kind's element rate, as calibration measured it
    (runtime.element_bench.element_models: output elements per second, a fraction of the fp32 peak); None where
    the target measured no rate for its kind. A kind measured by class too (``resize.linear``) takes the class's
    rate where there is one."""
    table = fig.owner_efficiency()
    int8_key = _int8_element_key(facts, table)
    rate = (table.get(int8_key) if int8_key else None) or \
        (table.get(f"{facts['kind']}.{facts['op_class']}") if facts.get("op_class") else None) or \
        table.get(facts["kind"]) or (table.get(REDUCTION_KEY) if facts["kind"] in REDUCTION_KINDS else None)
    if not rate or not elements or facts["device"] != "cpu" or not fig.peaks.fp32:
        return None
    seconds = elements / (fig.peaks.fp32 * rate)
    if facts["kind"] in BINARY_ELEMENT_KINDS and facts["bytes_read"] and (
            facts["execution_dtype"] in (None, "fp32") or int8_key in BYTE_SCALED_INT8_KINDS):
        # the kind's model reads two whole tensors; a scalar or a per-channel operand moves a third less
        model_bytes = INT8_BINARY_MODEL_BYTES if int8_key else BINARY_MODEL_BYTES
        seconds *= min(1.0, (facts["bytes_read"] + facts["bytes_written"]) / (model_bytes * elements))
    return seconds, rate


def _int8_element_key(facts: Mapping[str, Any], table: Mapping[str, float]) -> str | None:
    """The int8 element kind (``add.int8``: onnxruntime's QLinearAdd; ``resize.linear.int8`` by its class first)
    that prices an int8 node, where the target measured it (runtime.element_bench); None otherwise (the float
    kind's rate then prices it)."""
    if facts["execution_dtype"] != "int8":
        return None
    keys = ([f"{facts['kind']}.{facts['op_class']}.int8"] if facts.get("op_class") else []) + [f"{facts['kind']}.int8"]
    return next((key for key in keys if key in table), None)


# Element kinds whose calibration model (runtime.element_bench.element_models) adds or multiplies two whole float
# tensors, 12 bytes moved per output element: an operation of the same kind that moves less (a scalar, a bias per
# channel) is priced in proportion. Measured (PP-OCRv4's recognizer, one thread): an Add of a scalar over 245 K
# elements took 38 µs, priced 61 at the two-tensor rate.
BINARY_ELEMENT_KINDS = frozenset({"add", "mul"})
BINARY_MODEL_BYTES = 12
# Their int8 models move 3 bytes per element; only the Add's time follows its bytes (measured, one thread: an Add of
# a scalar 0.61x of two maps', a Mul by one 0.87x, where bytes say 0.67x)
INT8_BINARY_MODEL_BYTES = 3
BYTE_SCALED_INT8_KINDS = frozenset({"add.int8"})
# A Where's element model (runtime.element_bench) chooses between a map and a scalar: a second full-size value costs
# as much again or more with a condition per element (0.6 -> 1.9 ns per element measured with one in runs, 3.6 ->
# 7.2 with a random one), half as much with a broadcast one (0.9 -> 1.35; graph.onnx_adapter.where_class).
WHERE_SECOND_VALUE = {None: 1.0, "broadcast": 0.5}


def _apply_runtime_quantize(times: dict[str, Any], node: Node, facts: Mapping[str, Any], fig: _Figures,
                            overhead_us: float) -> None:
    """The QuantizeLinear kernels onnxruntime's QDQ propagation puts in front of a node (graph.onnx_basic_rewrites),
    priced with it at the quantize kind's element rate, each a dispatch: a detector's Focus layer quantizes its whole
    image once per Slice (four 0.5 M-element quantizations, 1.1 ms measured with the 8-bit Slices, 0.55 priced as
    float Slices and four small quantizations)."""
    if not node.runtime_quantized_elements or times["time_us"] is None:
        return
    quantize = {**facts, "kind": "quantize", "op_class": None, "execution_dtype": "fp32"}
    priced = _element_time_s(quantize, fig, node.runtime_quantized_elements)
    if priced is not None:
        times["compute_time_us"] += priced[0] * 1e6  # a kernel of its own: added, not overlapped
        times["time_us"] += priced[0] * 1e6 + overhead_us
        times["overhead_us"] += overhead_us


def _apply_where_values(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any]) -> None:
    """A Where priced by its element rate, whose two values are both full-size maps, costs what its class adds."""
    if facts["kind"] != "where" or facts["op_class"] not in WHERE_SECOND_VALUE or facts["macs"] \
            or not times["compute_time_us"] or len(node.inputs) < 3:
        return
    output = graph.tensors.get(node.outputs[0]) if node.outputs else None
    if output is None or output.shape is None:
        return
    full = [graph.tensors.get(name) for name in node.inputs[1:3]]
    if all(value is not None and value.shape is not None and math.prod(value.shape) == math.prod(output.shape)
           for value in full):
        _scale_compute(times, 1 + WHERE_SECOND_VALUE[facts["op_class"]])


# The efficiency-table key of the cost of one run of a broadcasting loop: runs per second as a fraction of the fp32
# peak, measured by calibration (runtime.element_bench.element_models); unpriced where a target states none.
BROADCAST_SPAN_KEY = "broadcast_span"


def _add_span_time(times: dict[str, Any], graph: Graph, facts: Mapping[str, Any], fig: _Figures) -> None:
    """A broadcasting elementwise op on the CPU pays per run of its loop beyond the first (analysis.broadcast)."""
    rate = fig.owner_efficiency().get(BROADCAST_SPAN_KEY)
    if facts["op_type"] not in BROADCASTING_OPS or facts["domain"] not in ("", "ai.onnx") or not rate or \
            facts["device"] != "cpu" or not fig.peaks.fp32:
        return
    node = graph.nodes[facts["index"]]
    # as onnxruntime runs it: a Transpose its optimizer pushed through the node permutes its inputs
    shapes = list(node.runtime_input_shapes[:2]) if node.runtime_input_shapes else \
        [graph.tensors[name].shape if name in graph.tensors else None for name in node.inputs[:2]]
    spans = span_count(*shapes) if len(shapes) == 2 else None
    if not spans or spans <= 1:
        return
    extra_us = (spans - 1) / (fig.peaks.fp32 * rate) * 1e6
    times.update(broadcast_spans=spans, broadcast_span_us=extra_us)
    _add_compute_time(times, extra_us)


def _apply_depth(times: dict[str, Any], graph: Graph, facts: Mapping[str, Any], fig: _Figures) -> None:
    """An int8 convolution shallower than its family's reference runs slower (analysis.conv_depth), where the
    target measured the family's shallow model."""
    anchor = DEPTH_ANCHORS.get(facts["op_class"]) if facts["op_type"] in ("Conv", "QLinearConv") else None
    if anchor is None or facts["execution_dtype"] != "int8" or facts["device"] != "cpu" or \
            not times["compute_time_us"] or not times["efficiency"]:
        return
    reference_depth, shallower = anchor
    table = fig.owner_efficiency()
    shape = _conv_weight_shape(graph, graph.nodes[facts["index"]], facts["op_type"])
    if shape is None or len(shape) < 3:
        return
    _slow_down(times, _efficiency(table, "conv", facts["op_class"], "int8"),
               [(depth, table.get(key)) for key, depth in shallower], reference_depth, math.prod(shape[1:]))


def _conv_weight_shape(graph: Graph, node: Node, op_type: str) -> tuple[int, ...] | None:
    """The shape of a convolution's weight (None where unknown)."""
    position = 3 if op_type == "QLinearConv" else 1  # QLinearConv: x, its scale and zero point, w
    weight = graph.tensors.get(node.inputs[position]) if len(node.inputs) > position else None
    return tuple(weight.shape) if weight is not None and weight.shape else None


def _apply_transposed_traffic(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any],
                              fig: _Figures) -> None:
    """A float ConvTranspose on the CPU runs as onnxruntime's: a GEMM of the weights by the input (which MLAS packs
    first: the input read and written once more) into a column buffer of ``C_out x kH x kW`` values per input
    position, then col2im adds those columns into the output, zeroed first. That traffic comes on top of the GEMM
    (measured at one thread, AMD EPYC: 24 -> 24 channels, 2x2 stride 2 on 160x160, 2.55 ms where its MACs at
    the GEMM's rate take 1.0; 24 -> 1 on 320x320 0.80 ms for 0.17 of MACs), priced at its working set's rate for
    an op that writes what it reads; the GEMM itself at the ``conv_transpose`` class's efficiency (solved through
    this estimate by calibration)."""
    if facts["op_type"] != "ConvTranspose" or facts["device"] != "cpu" or not times["compute_time_us"] \
            or facts["execution_dtype"] not in (None, "fp32"):
        return
    weight = _conv_weight_shape(graph, node, "ConvTranspose")
    source = graph.tensors.get(node.inputs[0]) if node.inputs else None
    result = graph.tensors.get(node.outputs[0]) if node.outputs else None
    shapes = [t.shape if t is not None else None for t in (source, result)]
    if not weight or len(weight) < 3 or any(not shape or len(shape) != len(weight) or
                                            not all(isinstance(d, int) and d > 0 for d in shape) for shape in shapes):
        return
    # per input position, a column of every output channel's kernel taps
    columns = 4 * shapes[0][0] * shapes[1][1] * math.prod(weight[2:]) * math.prod(shapes[0][2:])
    read = facts["bytes_read"] - facts["weight_bytes_read"]
    traffic = 2 * read + 2 * columns + 3 * facts["bytes_written"]
    _add_compute_time(times, traffic / _writing_rate(fig, traffic) * 1e6)


def _runs_blocked(times: Mapping[str, Any], node: Node, facts: Mapping[str, Any], block: int | None) -> bool:
    """A float Conv that onnxruntime runs on its NCHWc path at this CPU's block, with a compute time to scale (what
    the block-padding, depthwise-border and padding-rows rules price)."""
    return bool(block) and facts["device"] == "cpu" and facts["execution_dtype"] in (None, "fp32") \
        and node.nchwc_blocks is not None and block in node.nchwc_blocks and bool(times["compute_time_us"])


def _mark_layout_path(facts: dict[str, Any], node: Node, block: int | None) -> None:
    """The kernel a float Conv runs at this CPU's NCHWc block: off the NCHWc path, im2col and a GEMM per image (the
    "gemm" class, analysis.conv_depth) or a depthwise one's plain kernel ("depthwise.gemm"); on it, with fewer
    input channels than a block (an RGB stem), the kernel that reads the plain NCHW input ("nchw": the stems of
    PP-OCRv4's detector, YOLOv8n and MobileNetV2 ran at 61-65 G FLOP/s in their models against 200 for a blocked
    Conv on an AVX-512 host; _apply_plain_input prices why), a 1x1 one its own class ("nchw.1x1": MobileNetV2 w0.5's
    8 -> 48 expansions after thin projections ran at 15 G MAC/s on an AMD EPYC where the stem class ran at 35)."""
    if block is None or node.nchwc_blocks is None or facts["device"] != "cpu":
        return
    if block not in node.nchwc_blocks and facts["op_class"] in (None, "1x1", "depthwise"):
        facts["op_class"] = "depthwise.gemm" if facts["op_class"] == "depthwise" else "gemm"
    elif block in node.nchwc_plain_input_blocks and facts["op_class"] in (None, "1x1"):
        facts["op_class"] = "nchw.1x1" if facts["op_class"] == "1x1" else "nchw"


# The work (MACs) at which a node of a kernel family gains half of what more threads give its class model
# (runtime.class_bench, far larger): onnxruntime's kernels split a node only where the work pays for waking the
# pool, so a small node runs at its one-thread speed. Measured at two threads (AVX-512 Xeon, onnxruntime 1.32,
# 1x1 Convs and MatMuls of 50 K to 67 M MACs): fp32 Convs gain 1.17x at 0.2 M MACs and 1.5x at 0.8 M (1.6x at
# most); int8 Convs 0.9x at 0.8 M, 1.25x at 3.2 M, 1.55x at 12.8 M, 1.8x at 51 M; int8 MatMuls at most 1.03x up
# to 67 M; fp32 MatMuls 1.5-1.9x from 65 K on (not attenuated). Applied on x86 only, where it was measured. The
# int8 MatMul's differs by CPU (an AMD EPYC's: 1.48x at 1 M MACs): calibration measures it
# (TargetProfile.parallel_half_macs, runtime.microbench.int8_matmul_half_work), and that replaces the constant.
PARALLEL_HALF_WORK = {("conv", "fp32"): 3e5, ("conv", "int8"): 8e6, ("matmul", "int8"): 1e9,
                      ("fully_connected", "int8"): 1e9}
# An op priced by its output elements (an Add, an activation) gains from more threads what its kind's element model
# (ELEMENT_MODEL_ELEMENTS, as calibration times it) gained at or beyond that size, and less below: measured at two
# threads (chains of same-shape Adds, Adds of a scalar, Relus, Sigmoids), nothing up to 37 K elements (0.93-1.07x),
# 1.3-1.7x at 100 K, 1.9-2.5x from 400 K; the share ``2 w^2 / (w^2 + ref^2)`` (0.24 at 37 K, 1 at 100 K) follows it.
ELEMENT_MODEL_ELEMENTS = 32 * 56 * 56  # runtime.element_bench.ELEMENT_SHAPE
INT8_ELEMENT_MODEL_ELEMENTS = 32 * 112 * 112  # runtime.element_bench.INT8_ELEMENT_SHAPE (a test keeps both equal)
# Ops whose onnxruntime CPU kernels run on the calling thread whatever the pool holds: measured at two threads
# (AMD EPYC, onnxruntime 1.32, maps of 0.5 and 4 MiB) 0.98-1.04x, where the copy bandwidth's scaling priced them
# 1.5-1.75x faster (a Transpose, a Concat, a Gather, a Cast and the reductions did gain, 1.4-2x).
ONE_THREAD_OPS = frozenset({"Slice", "Pad", "Tile", "Expand", "Where", "DepthToSpace", "SpaceToDepth"})


# onnxruntime hands an element-wise loop (a unary activation, a broadcasting binary op) to more threads by Eigen's cost
# model (ThreadPool::TryParallelFor over the output elements): (n * c - 100000) / 100000 + 0.9 threads, at least one,
# where c is the cycles it counts per element: 11/64 per byte loaded and stored (1.375 for float32 in and out) plus
# the functor's Cost() (onnxruntime's activations.h: 1 for Relu and Tanh, 2 for Sigmoid, 0.5 for HardSigmoid, 25 for
# LeakyRelu; 1 for the binary ops). So a float Add gets a second thread from 88 K elements, a Sigmoid from 62 K, a
# HardSigmoid from 112 K, whatever the CPU. Measured at two threads (AMD EPYC, onnxruntime 1.32, chains of eight on
# [1, 16, n/16] maps): each of these ops 0.96-1.03x of one thread up to its step and 0.52-0.77x past it (Add, Sub, Mul,
# Div, Neg, Abs, Relu and Tanh between 80 K and 88 K; Sigmoid, Exp and Sqrt between 56 K and 64 K; HardSigmoid and
# HardSwish between 96 K and 112 K; Log between 12 K and 16 K; LeakyRelu, Erf and Gelu from about 8 K), where the
# share curve below had given an Add of 64 K elements 1.6x. Clip and Softmax split otherwise (gradually from 16-24 K)
# and keep the curve.
ELEMENT_SPLIT_COSTS = {"Add": 1.0, "Sub": 1.0, "Mul": 1.0, "Div": 1.0, "Neg": 1.0, "Abs": 1.0, "Relu": 1.0,
                       "Tanh": 1.0, "Sigmoid": 2.0, "Exp": 2.0, "Sqrt": 2.0, "HardSigmoid": 0.5, "HardSwish": 0.5,
                       "Log": 15.0, "LeakyRelu": 25.0, "Erf": 25.0, "Gelu": 25.0}
EIGEN_CYCLES_PER_BYTE = 11 / 64  # each byte loaded or stored (Eigen's L2 load and store cost)
ELEMENT_SPLIT_FLOAT_CYCLES = 2 * 4 * EIGEN_CYCLES_PER_BYTE  # one float32 loaded and one stored per element
EIGEN_STARTUP_CYCLES = 100_000
EIGEN_PER_THREAD_CYCLES = 100_000


# The same cost model splits onnxruntime's 8-bit element loops, by the cycles per element each kernel states (11/64
# per byte loaded and stored, plus its compute): QLinearAdd and QLinearMul (a byte in and out, unit cost 1, as the
# float binary ops) and the lookup-table activations QLinearSigmoid and QLinearLeakyRelu (TensorOpCost{1, 1, 1}),
# 1.34 cycles: a second thread from 156 K elements; QuantizeLinear (blocks of 128 floats in, bytes out, 2 cycles per
# element), 2.86 cycles: from 73 K. Measured at two threads (AMD EPYC, onnxruntime 1.32, fan-outs of eight on
# [1, 16, n/16] maps): the four int8 ops 0.97-1.04x of one thread up to 136 K elements and 1.39-1.94x from 200 K,
# where the share curve had given them part of the gain from a few thousand elements on; QuantizeLinear 0.99-1.00x up
# to 64 K and 1.69x at 128 K. DequantizeLinear runs on the calling thread in onnxruntime's PyPI builds (its threaded
# loop is compiled into client builds only): 0.99-1.01x from 8 K to 512 K elements.
INT8_ELEMENT_SPLIT_CYCLES = dict.fromkeys(("add.int8", "mul.int8", "sigmoid.int8", "leaky_relu.int8"),
                                          2 * EIGEN_CYCLES_PER_BYTE + 1.0)
QUANTIZE_SPLIT_CYCLES = (4 + 1) * EIGEN_CYCLES_PER_BYTE + 2.0


def element_split_threads(op_type: str, elements: int | None, threads: int,
                          cycles_per_element: float | None = None) -> int | None:
    """The threads onnxruntime's cost model gives an element-wise ``op_type`` node of ``elements`` outputs at
    ``threads``: a float op's cycles from ELEMENT_SPLIT_COSTS, else ``cycles_per_element`` where given (an 8-bit
    kernel's); None for an op it does not cover or an unknown size."""
    cost = ELEMENT_SPLIT_COSTS.get(op_type)
    if cycles_per_element is None and cost is not None:
        cycles_per_element = ELEMENT_SPLIT_FLOAT_CYCLES + cost
    if cycles_per_element is None or not elements:
        return None
    cycles = elements * cycles_per_element
    return max(1, min(threads, int((cycles - EIGEN_STARTUP_CYCLES) / EIGEN_PER_THREAD_CYCLES + 0.9)))


def _element_split(facts: Mapping[str, Any], elements: int | None, threads: int,
                   table: Mapping[str, float]) -> int | None:
    """The threads onnxruntime runs a CPU node of an ONNX graph on where its kernel splits an element loop by the
    cost model (float element-wise ops, the 8-bit ones the target measured, QuantizeLinear) or never splits
    (DequantizeLinear of an 8-bit tensor); None for every other node (the share curve then decides)."""
    if facts["domain"] not in ("", "ai.onnx", "com.microsoft"):
        return None
    if _splits_as_elements(facts):
        return element_split_threads(facts["op_type"], elements, threads)
    int8_key = _int8_element_key(facts, table)
    if int8_key in INT8_ELEMENT_SPLIT_CYCLES:
        return element_split_threads(facts["op_type"], elements, threads, INT8_ELEMENT_SPLIT_CYCLES[int8_key])
    if facts["role"] == "qdq" and facts["op_type"] == "QuantizeLinear":
        return element_split_threads(facts["op_type"], elements, threads, QUANTIZE_SPLIT_CYCLES)
    if facts["role"] == "qdq" and facts["op_type"] == "DequantizeLinear":
        return 1
    return None


def _parallel_share(facts: Mapping[str, Any], elements: int | None,
                    measured_half: Mapping[str, float] | None = None, int8_element: bool = False) -> float | None:
    """The share of what more threads give the node's class (or element) model that the node gets (1: all), by
    its work: PARALLEL_HALF_WORK's MACs (or the target's calibrated ``parallel_half_macs``, "kind@dtype") against
    its class model's own where that model is small enough to gain less than the peak (the int8 Convs',
    runtime.class_bench.INT8_CONV_CLASS_MACS: the int8 depthwise model, 3.6 M MACs, gained 2.2x at two threads on an
    AMD EPYC, which a 1 M-MAC depthwise node had been given a fifth of), or its output elements for an
    element-priced op (against the int8 kinds' larger model, ``int8_element``); None where its gain is left as its
    figures say. A one-row int8 MatMul larger than its class model (INT8_ROW_CLASS_MACS, 1 M) gains what the class
    gained: measured at two threads (AMD EPYC, onnxruntime 1.32, with the call's fixed cost) 1.38x at 1 MiB of
    weights, 1.31-1.42x at 2-4 MiB, where a share growing with the work had priced 4 MiB 2.0x; only weights streamed
    from DRAM (9-16 MiB: 1.8-2.2x) gain more, as their bandwidth (priced apart) does."""
    if facts["macs"]:
        dtype = facts["execution_dtype"] or "fp32"
        half = (measured_half or {}).get(f"{facts['kind']}@{dtype}") or PARALLEL_HALF_WORK.get((facts["kind"], dtype))
        if not half:
            return None
        keys = ([f"{facts['kind']}.{facts['op_class']}@{dtype}"] if facts.get("op_class") else []) + \
            [f"{facts['kind']}@{dtype}"]
        model = next((INT8_CONV_CLASS_MACS[key] for key in keys if key in INT8_CONV_CLASS_MACS), None)
        work = facts["macs"]
        if facts.get("op_class") == "row" and dtype == "int8":
            work = min(work, INT8_ROW_CLASS_MACS)  # a row's gain stops growing at the class model's size
        share = work / (work + half)
        return min(1.0, share * (model + half) / model) if model else share
    if not elements:
        return None
    reference = INT8_ELEMENT_MODEL_ELEMENTS if int8_element else ELEMENT_MODEL_ELEMENTS
    return min(1.0, 2 * elements ** 2 / (elements ** 2 + reference ** 2))


def _splits_as_elements(facts: Mapping[str, Any]) -> bool:
    """Whether the node is a float element-wise op onnxruntime splits by its cost model (ELEMENT_SPLIT_COSTS)."""
    return (facts["op_type"] in ELEMENT_SPLIT_COSTS and facts["execution_dtype"] in (None, "fp32")
            and facts["domain"] in ("", "ai.onnx", "com.microsoft"))


# MLAS splits the GEMM of a Conv off the NCHWc path (im2col and a GEMM per image and group) across threads only by
# this many multiply-adds per thread (MLAS_SGEMM_THREAD_COMPLEXITY, 64 Ki, in its convolve.cpp): a call below it
# runs on one thread whatever the pool holds. Measured at two threads (AMD EPYC): silero-vad's batch of 64 1-D
# Convs gained 1.48x and 1.41x at 264 K and 198 K multiply-adds per image, nothing at 49 K, and the 2-D class
# model (61 M) 1.74x; each image's hand-off to the pool about 2 µs.
GEMM_CONV_WORK_PER_THREAD = 64 * 1024


def _mlas_gemm_gain(work: float, threads: int, class_gain: float) -> tuple[int, float]:
    """(threads MLAS gives one GEMM call of ``work`` multiply-adds, the gain they bring): ``class_gain`` (what the
    class model's calls gained at ``threads``) in proportion to the extra threads used, none below the split."""
    used = min(threads, int(work // GEMM_CONV_WORK_PER_THREAD) + 1)
    return used, 1 + (max(1.0, class_gain) - 1) * (used - 1) / (threads - 1)


def _price_gemm_conv_threads(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any],
                             one_thread_us: Callable[[], float | None], class_gain: float | None, threads: int,
                             hand_off_us: float) -> bool:
    """A float Conv on the im2col + GEMM path at ``threads`` threads: its one-thread price divided by the gain of
    the threads MLAS gives each image's GEMM (its share of ``class_gain``, the ``conv.gemm`` class's own gain at
    ``threads``), plus a hand-off per image where that is more than one (``one_thread_us`` prices the node at one
    thread, called only where the rule applies). False where it does not apply."""
    if facts["kind"] != "conv" or facts["op_class"] != "gemm" or facts["execution_dtype"] not in (None, "fp32") \
            or not class_gain or threads < 2 or not facts["macs"]:
        return False
    source = graph.tensors.get(node.inputs[0]) if node.inputs else None
    weight = _conv_weight_shape(graph, node, facts["op_type"])
    if source is None or not source.shape or not weight or len(weight) < 2 \
            or not all(isinstance(d, int) and d > 0 for d in source.shape[:2]):
        return False
    alone = one_thread_us()
    if not alone:
        return False
    groups = max(1, source.shape[1] // max(1, weight[1]))
    calls = source.shape[0] * groups
    used, gain = _mlas_gemm_gain(facts["macs"] / calls, threads, class_gain)
    priced = alone / gain + (calls * hand_off_us if used > 1 else 0.0)
    _add_compute_time(times, priced - times["compute_time_us"])
    return True


# MLAS's NCHWc kernels split a Conv across threads by output rows, each row of one filter set (four blocks of output
# channels) of one image and group, or for a depthwise Conv of one channel block (snchwc.cpp): a node with fewer
# such rows than threads, or rows that do not divide evenly, gains less than its class. Measured at two threads
# (AMD EPYC, onnxruntime 1.32): a 64 -> 64 3x3 Conv over one output row 1.02x, two rows 1.92x, three 1.40x, 64 -> 128
# over one row (two filter sets) 1.78x; basic-pitch's constant-Q Convs (one output channel over a one-row signal)
# 1.00x, priced at their class's 1.9x.
NCHWC_FILTER_SET_BLOCKS = 4


def _nchwc_work_rows(graph: Graph, node: Node, facts: Mapping[str, Any], block: int) -> int | None:
    """The rows of work MLAS shares among threads for a blocked float Conv (None where shapes are unknown)."""
    source = graph.tensors.get(node.inputs[0]) if node.inputs else None
    output = graph.tensors.get(node.outputs[0]) if node.outputs else None
    weight = _conv_weight_shape(graph, node, facts["op_type"])
    if source is None or output is None or not source.shape or not output.shape or len(output.shape) != 4 \
            or not weight or len(weight) != 4:
        return None
    dims = (*output.shape, source.shape[1], weight[1])
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    batch, channels, rows, _, inputs, per_group = dims
    if facts["op_class"] == "depthwise":
        return batch * -(-channels // block) * rows
    groups = max(1, inputs // per_group)
    return batch * groups * -(-(channels // groups) // (block * NCHWC_FILTER_SET_BLOCKS)) * rows


def _apply_row_split(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any], block: int | None,
                     threads: int, one_thread_us: Callable[[], float | None]) -> None:
    """A blocked float Conv at ``threads`` threads waits for its busiest thread: its time grows by the share of rows
    that thread takes over an even split, up to its one-thread time (``one_thread_us``, called only where the rule
    applies)."""
    if threads < 2 or not _runs_blocked(times, node, facts, block):
        return
    rows = _nchwc_work_rows(graph, node, facts, block)
    if not rows:
        return
    busiest = -(-rows // threads) * threads / rows
    if busiest <= 1:
        return
    alone = one_thread_us()
    if alone and alone > times["compute_time_us"]:
        _add_compute_time(times, min(alone, times["compute_time_us"] * busiest) - times["compute_time_us"])


def _apply_parallel_work(times: dict[str, Any], share: float, one_thread_us: float | None) -> None:
    """A node priced at more than one thread gains ``1 + (r - 1) * share`` of its one-thread speed
    (``one_thread_us``: its compute priced at one thread), where ``r`` is what the figures say more threads give
    it (``share``: _parallel_share)."""
    many = times["compute_time_us"]
    if not many or not one_thread_us or one_thread_us <= many:
        return
    gain = 1 + (one_thread_us / many - 1) * share
    _add_compute_time(times, one_thread_us / gain - many)


# onnxruntime's kernel for a blocked Conv that reads a plain NCHW input (x86) broadcasts each input value to the
# filter blocks of one pass, at most four: the fewer output blocks, the fewer FMAs share each load. Measured hot,
# one thread, AVX-512 (3x3 / 7x7 kernels, 1-8 input channels, strides 1 to 4): 16 outputs 88-120 G FLOP/s, 32
# 100-150, 64 and 128 106-170; the share ``b / (b + 0.5)`` of b blocks follows it. An input beyond L2 is read
# as it computes, not beside it: PP-OCRv4's detector stem (a 4.9 MB image from DRAM) took 1368 µs in the model
# against 814 µs alone and hot, the compute and the image's read added.
NCHW_REFERENCE_CHANNELS = 32  # runtime.class_bench's conv.nchw and conv.nchw.1x1 models
NCHW_MAX_BLOCKS = 4
NCHW_HALF_BLOCKS = 0.5


def _apply_plain_input(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any], fig: _Figures,
                       block: int | None) -> None:
    """A Conv of the "nchw" class: its speed by the output blocks its kernel shares a load between (against its
    class model's), and the read of an input larger than L2 added to its compute."""
    if facts["op_class"] not in ("nchw", "nchw.1x1") or not block or not times["compute_time_us"] or not times["efficiency"]:
        return
    shape = _conv_weight_shape(graph, node, facts["op_type"])
    if shape is None:
        return

    def share(channels: int) -> float:
        blocks = min(NCHW_MAX_BLOCKS, -(-channels // block))
        return blocks / (blocks + NCHW_HALF_BLOCKS)

    _scale_compute(times, share(NCHW_REFERENCE_CHANNELS) / share(int(shape[0])))
    read = facts["bytes_read"] - facts["weight_bytes_read"]
    if read > 0 and fig.l2_bytes and read > fig.l2_bytes:  # within L2 the loads hit (its own model's input)
        _add_compute_time(times, read / _activation_rate(fig, read) * 1e6)


def _apply_block_padding(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any],
                         block: int | None) -> None:
    """A float Conv on onnxruntime's NCHWc path computes whole blocks of channels (16 floats with AVX-512, 8 with
    AVX2): its output channels, the input channels it reads blocked (padded by the reorder: graph.onnx_layout),
    a depthwise one's channels. Measured hot at one thread on AVX-512 hosts: 32 -> 24 channels 3x3 on 64x64 took
    as long as 32 -> 32 (693 and 704 µs), 96 -> 24 as 96 -> 32, 36 -> 64 as 48 -> 64 (1477 and 1474 µs), 20 -> 64
    as 32 -> 64, a depthwise Conv of 72 channels as one of 80; PP-OCRv4's detector head (96 -> 24 on 160x160 and
    80x80 maps) ran at 0.77x of the speed priced for its MACs. A plain input (the "nchw" classes) is read as it
    is."""
    if not _runs_blocked(times, node, facts, block) or facts["kind"] != "conv" \
            or facts["op_class"] not in (None, "1x1", "depthwise"):
        return
    shape = _conv_weight_shape(graph, node, facts["op_type"])
    if shape is None or len(shape) < 2 or not shape[0] or not shape[1]:
        return

    def padded(channels: int) -> float:
        return -(-channels // block) * block / channels

    outputs, inputs = int(shape[0]), int(shape[1])
    factor = padded(outputs) if facts["op_class"] == "depthwise" else padded(outputs) * padded(inputs)
    if factor > 1:
        _scale_compute(times, factor)


# onnxruntime's blocked depthwise kernel computes the output columns whose window reaches into the left or right
# padding in a slower loop, with a bound check per tap. Measured hot at one thread (AMD EPYC, AVX-512, 96 channels
# 3x3, maps 56 to 2): 44 G MAC/s inside, about 9 G MAC/s in those columns (BORDER_RATE of the inner rate); the
# class model (calibration's, 56x56) has 2 of 56 columns there, a 7x7 map 2 of 7 (measured 21 G MAC/s in a chain
# of them, 37.6 at 56x56). Priced for 3x3 kernels only, where it was measured: a 5x5 kernel's border costs less
# (PP-LCNet's 5x5 depthwise Convs on 14x14 and 7x7 maps ran 1.3x slower per MAC than priced without it, where
# this rule would give them 1.8x and 2.8x).
BORDER_RATE = 0.21
DEPTHWISE_REFERENCE_WIDTH = 56  # runtime.class_bench's conv.depthwise model


def _border_share(kernel: int, stride: int, width: int) -> float:
    """The share of a map's output columns whose window reaches into a side's padding ("same" padding)."""
    columns = 2 * -(-(kernel // 2) // max(1, stride))
    return min(1.0, columns / width) if width > 0 else 0.0


def _apply_depthwise_border(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any],
                            block: int | None) -> None:
    """A float 3x3 depthwise Conv on the NCHWc path: its border columns at BORDER_RATE of its inner rate, against
    the class model's share of them (a 7x7 map's costs 1.7x per MAC what a 56x56 one does)."""
    if not _runs_blocked(times, node, facts, block) or facts["op_class"] != "depthwise" or len(node.inputs) < 2 \
            or not node.outputs:
        return
    shape = _conv_weight_shape(graph, node, facts["op_type"])
    x, y = graph.tensors.get(node.inputs[0]), graph.tensors.get(node.outputs[0])
    if shape is None or len(shape) != 4 or x is None or y is None or not x.shape or not y.shape \
            or len(x.shape) != 4 or len(y.shape) != 4:
        return
    width_in, width_out = x.shape[3], y.shape[3]
    if tuple(shape[2:]) != (3, 3) or not all(isinstance(v, int) and v > 0 for v in (width_in, width_out)):
        return
    stride = max(1, round(width_in / width_out))

    def cost(share: float) -> float:  # per MAC, in units of the inner rate's
        return (1 - share) + share / BORDER_RATE

    reference = cost(_border_share(3, 1, DEPTHWISE_REFERENCE_WIDTH))
    _scale_compute(times, cost(_border_share(3, stride, width_out)) / reference)


def _apply_depthwise_working_set(times: dict[str, Any], node: Node, facts: Mapping[str, Any], fig: _Figures,
                                 block: int | None) -> None:
    """A float depthwise Conv on the NCHWc path whose maps outgrow the caches: its efficiency on the curve through
    the class model's and the larger working sets calibration timed (analysis.conv_working_set)."""
    if not _runs_blocked(times, node, facts, block) or facts["op_class"] != "depthwise":
        return
    table = fig.owner_efficiency()
    reference = _efficiency(table, "conv", "depthwise", "fp32")
    if not reference:
        return
    nbytes = facts["bytes_read"] - facts["weight_bytes_read"] + facts["bytes_written"]
    factor = working_set_factor(nbytes, DEPTHWISE_REFERENCE_BYTES, reference,
                                [(size, table.get(key)) for key, size in WORKING_SET_ANCHORS])
    if factor < 1.0:
        _scale_compute(times, 1 / factor)


# What a blocked Conv pays per output apart from its taps, in taps of one input channel: measured on an AMD EPYC
# (onnxruntime 1.32, one thread, chains of Convs on maps of 1 to 48 rows by 96): 3x3 depthwise 9.8, 5x5 depthwise
# 4.3, a dense 3x3 of 64 channels 11.6.
OUTPUT_COST_TAPS = 8.0
# the class models' maps (3x3 kernels over 56 rows): their measured efficiency already holds their own padding rows
REFERENCE_ROWS_INSIDE = (56 * 3 - 2) / (56 * 3)


def padding_rows_factor(share: float, taps: int) -> float:
    """A blocked Conv's compute time over its class model's per MAC, from the share of its kernel rows inside the
    input and its taps per output (input channels of its group x kernel area)."""
    fixed = OUTPUT_COST_TAPS / (OUTPUT_COST_TAPS + taps)
    return (fixed + (1 - fixed) * share) / (fixed + (1 - fixed) * REFERENCE_ROWS_INSIDE)


def _apply_padding_rows(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any],
                        block: int | None) -> None:
    """A float Conv on the NCHWc path skips the kernel rows that fall on the top and bottom padding: its taps cost
    in proportion to the rows inside, beside a cost per output (OUTPUT_COST_TAPS). Measured against 48-row maps, a
    5x5 depthwise Conv on 2 rows ran 2.2x faster per MAC (2 of its 5 rows inside), a dense 3x3 one on 2 rows
    1.5x (2 of 3); PP-OCR's direction classifier's 5x5 depthwise Convs on 2x96 and 3x96 maps had been priced
    3.4x their measured time."""
    share = node.valid_kernel_rows
    if share is None or not _runs_blocked(times, node, facts, block) \
            or facts["op_class"] not in (None, "1x1", "depthwise", "thin", "narrow"):
        return
    shape = _conv_weight_shape(graph, node, facts["op_type"])
    if shape is None or len(shape) != 4:
        return
    _scale_compute(times, padding_rows_factor(share, math.prod(shape[1:])))


# onnxruntime's recurrent cells compute the input projection of all steps as one GEMM (X x W), then step by step
# the recurrent product (H x R), a matrix-vector product per step: priced apart where calibration solved the
# recurrent part's own efficiency ("lstm.recurrent", from the lstm class model: 256 inputs, 256 hidden units),
# the projection at the MatMul's. One efficiency for both priced a cell of 256 inputs and 128 hidden units (a
# third of its work recurrent, against half in the class model) 15% slow.
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
# At more threads, onnxruntime's LSTM hands each step's recurrent GEMM (batch x 4H x H) to MLAS with the thread
# pool, which splits it only by GEMM_CONV_WORK_PER_THREAD multiply-adds per thread, and pays a hand-off per step
# either way it splits: the lstm class model's step (256 hidden units, 262 K multiply-adds) gained 1.7x at two
# threads, a cell of 128 hidden units (65 K, 3 µs a step) 1.0-1.1x in its model, 192 units 1.05-1.5x (AMD EPYC,
# onnxruntime 1.32). The class's two-thread step, less a hand-off (what a pooled Conv's dispatch measured beyond a
# plain one's), scales to the node's step; the hand-off is added back per step and direction.
LSTM_CLASS_STEP_MACS = 4 * 256 * 256  # runtime.class_bench's "lstm" model: batch 1, 256 hidden units


def _apply_recurrent_split(times: dict[str, Any], graph: Graph, node: Node, facts: Mapping[str, Any],
                           fig: _Figures, one_thread: _Figures | None = None, threads: int = 1,
                           hand_off_us: float = 0.0) -> None:
    """A float LSTM/GRU/RNN: its input projection at the MatMul's efficiency, its recurrent products at the
    target's ``{kind}.recurrent`` efficiency, where measured (else its kind's one efficiency prices all). Priced
    at more ``threads`` (``one_thread``: the figures at one), an LSTM's recurrent steps gain as MLAS splits them,
    each step paying ``hand_off_us``."""
    if facts["op_type"] not in RECURRENT_OPS or facts["domain"] not in ("", "ai.onnx") or facts["device"] != "cpu" \
            or facts["execution_dtype"] not in (None, "fp32") or not times["compute_time_us"] or not facts["macs"]:
        return
    table = fig.owner_efficiency()
    recurrent, projection = table.get(f"{facts['kind']}.recurrent"), _efficiency(table, "matmul", None, "fp32")
    if recurrent is None and threads > 1 and one_thread is not None:
        # solved at one thread only (at more, the class model ran as fast as the split allows): still priced
        # step by step, not by the whole node's efficiency
        recurrent = one_thread.owner_efficiency().get(f"{facts['kind']}.recurrent")

    def shape(position: int) -> tuple[Any, ...] | None:  # W: [directions, gates x hidden, inputs]; R: [..., hidden]
        info = graph.tensors.get(node.inputs[position]) if len(node.inputs) > position else None
        return tuple(info.shape) if info is not None and info.shape else None

    w, r = shape(1), shape(2)
    if not recurrent or not projection or not w or not r:
        return
    inputs, hidden = w[-1], r[-1]
    if not isinstance(inputs, int) or not isinstance(hidden, int) or inputs + hidden <= 0:
        return
    peak = fig.peaks.fp32
    if not peak:
        return
    share = inputs / (inputs + hidden)
    recurrent_s = 2 * facts["macs"] * (1 - share) / (recurrent * peak)
    threaded = _recurrent_steps_at_threads(node, facts, w[0], facts["macs"] * (1 - share), fig, one_thread,
                                           threads, hand_off_us)
    split_s = 2 * facts["macs"] * share / (projection * peak) + (recurrent_s if threaded is None else threaded)
    times["efficiency"] = 2 * facts["macs"] / (peak * split_s)
    _add_compute_time(times, split_s * 1e6 - times["compute_time_us"])


def _recurrent_steps_at_threads(node: Node, facts: Mapping[str, Any], directions: Any, recurrent_macs: float,
                                fig: _Figures, one_thread: _Figures | None, threads: int,
                                hand_off_us: float) -> float | None:
    """An LSTM's recurrent part (``recurrent_macs``) at ``threads`` threads, in seconds, step by step as MLAS
    splits it (LSTM_CLASS_STEP_MACS), or None where it is not priced so."""
    if one_thread is None or threads < 2 or facts["kind"] != "lstm" or not node.recurrent_steps \
            or not isinstance(directions, int) or directions < 1:
        return None
    alone = one_thread.owner_efficiency().get("lstm.recurrent")
    many = fig.owner_efficiency().get("lstm.recurrent")
    if not alone or not one_thread.peaks.fp32 or not fig.peaks.fp32:
        return None
    class_alone_s = 2 * LSTM_CLASS_STEP_MACS / (alone * one_thread.peaks.fp32)
    hand_off_s = hand_off_us * 1e-6
    # what the split gives the class's step once its hand-off is taken out (at most the threads' share); not solved
    # at this count (runtime.class_bench: the class model ran at least as fast as that share allows): the share
    class_gain = float(threads) if not many else class_alone_s / max(
        2 * LSTM_CLASS_STEP_MACS / (many * fig.peaks.fp32) - hand_off_s, class_alone_s / threads)
    calls = node.recurrent_steps * directions
    step_macs = recurrent_macs / calls
    used, gain = _mlas_gemm_gain(step_macs, threads, class_gain)
    step_alone_s = 2 * step_macs / (alone * one_thread.peaks.fp32)
    return calls * (step_alone_s / gain + hand_off_s) if used > 1 else calls * step_alone_s


def _apply_positions(times: dict[str, Any], node: Node, facts: Mapping[str, Any], fig: _Figures) -> None:
    """A GEMM-path Conv with fewer output positions per image than its class's reference, or an LSTM over fewer
    steps than its class model's, runs slower (analysis.conv_depth), where the target measured the short model."""
    if facts["op_class"] == "gemm" and facts["kind"] == "conv" and node.output_positions:
        anchor, size, reference_key = GEMM_POSITIONS_ANCHOR, node.output_positions, ("conv", "gemm")
    elif facts["kind"] == "lstm" and node.recurrent_steps and facts["execution_dtype"] in (None, "fp32"):
        anchor, size, reference_key = LSTM_STEPS_ANCHOR, node.recurrent_steps, ("lstm", None)
    else:
        return
    if not times["compute_time_us"] or not times["efficiency"]:
        return
    reference_size, short_key, short_size = anchor
    table = fig.owner_efficiency()
    _slow_down(times, _efficiency(table, *reference_key, "fp32"), [(short_size, table.get(short_key))],
               reference_size, size)


def _slow_down(times: dict[str, Any], reference: float | None, anchors: list[tuple[int, float | None]],
               reference_size: int, size: int) -> None:
    """The node's efficiency at its ``size`` on the curve through the reference's and the shallower anchors'
    (analysis.conv_depth.anchored_factor), where the reference and at least one of them were measured."""
    if not reference:
        return
    factor = anchored_factor(size, reference_size, reference, anchors)
    if factor < 1.0:
        _scale_compute(times, 1 / factor)


def _priced_elements(node: Node, elements: int | None) -> int | None:
    """The elements a node's element kind is timed by: its largest output's, each window tap of a pool's, only the
    requantized ones of an int8 Concat (the rest are copies, priced by their bytes), a float Concat's small chunks."""
    if node.requantized_elements is not None:
        return node.requantized_elements
    if node.copy_chunks is not None:
        return node.copy_chunks
    return elements * node.window_taps if elements and node.window_taps else elements


def _output_elements(graph: Graph, index: int) -> int | None:
    """The element count of a node's largest output (None when no output's shape is known)."""
    counts = [math.prod(tensor.shape) for name in graph.nodes[index].outputs
              if (tensor := graph.tensors.get(name)) is not None and tensor.shape is not None]
    return max(counts) if counts else None


def _names(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ------------------------------------------------------------------------ profile


def static_profile(
    model: Any,
    target: TargetProfile,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    cpu_target: TargetProfile | None = None,
    node_overhead_us: float | None = None,
    threads: int | None = None,
    xnnpack: bool = True,
) -> StaticProfile:
    """Profile ``model`` on ``target`` statically (see the module doc for the cost model).

    ``model`` is a neutral :class:`~edgeopt.graph.model.Graph`, or a loaded model of a format with a graph
    adapter (an ``onnx.ModelProto``), which is adapted at ``input_shapes``: they set the sizes of symbolic
    input dims; a leading batch dim left unset is 1 (recorded in ``assumptions``), any other unset symbolic
    dim raises :class:`~edgeopt.errors.InputError` naming the inputs and dims. A None key (an unnamed
    ``--input-shape`` from :func:`edgeopt.data.parse_input_shapes`) stands for the only input of a
    single-input model. ``cpu_target`` is the profile whose peaks, bandwidth and efficiency cost the nodes
    that run on the CPU (for an accelerator target whose ``host_cpu`` names another profile); default:
    ``target`` itself. ``threads``: the CPU's intra-op threads (None: all its cores, onnxruntime's default);
    its peaks at that count come from :func:`~edgeopt.targets.peaks_at`. The model is not mutated and external
    data is not read.
    """
    graph = model if isinstance(model, Graph) else build_graph(model, input_shapes)
    cpu_profile = cpu_target or target
    cpu_threads = max(1, min(threads or cpu_profile.cores or 1, cpu_profile.cores or threads or 1))
    if node_overhead_us is None:
        node_overhead_us = next((t.node_overhead_us for t in (cpu_target, target)
                                 if t is not None and t.node_overhead_us is not None), NODE_OVERHEAD_US)
    # a float Conv at more than one thread wakes the thread pool whatever its size (measured where calibrated)
    conv_overhead_us = (cpu_profile.parallel_conv_overhead_us if cpu_threads > 1
                        and cpu_profile.parallel_conv_overhead_us is not None else node_overhead_us)
    # what waking the pool adds to one call (an LSTM's step GEMM): the pooled Conv's dispatch beyond a plain one
    pool_hand_off_us = max(0.0, conv_overhead_us - node_overhead_us)
    placement: Placement = place_nodes(graph, target)
    traffic: list[NodeTraffic] = node_traffic(graph)
    plan: MemoryPlan = liveness_plan(graph)
    acc = target.accelerator
    warnings: list[str] = list(graph.warnings)
    assumptions: list[str] = list(graph.assumptions)

    # -- per node: MACs, bytes, and why the cost is unknown if it is
    names = {node.index: node.name for node in graph.nodes}
    rows = [_node_facts(node, traffic[node.index], placement.devices[node.index], names) for node in graph.nodes]

    # -- can the target's figures price every costed node?
    caches = cpu_profile.caches
    last_level = caches.l3_bytes or caches.l2_bytes
    kernel = cpu_profile.kernel_bandwidth
    def cpu_figures_at(count: int) -> _Figures:
        """What prices a CPU node at ``count`` threads."""
        # activations stream like a copy (the target's bandwidth), scaled by threads as the kernels' DRAM reads
        copy = cpu_profile.memory_bandwidth_bytes_per_s
        if copy and kernel and kernel.dram_one_thread:
            copy *= (bandwidth_at(cpu_profile, count) or kernel.dram) / kernel.dram_one_thread
        # weights re-read run after run: at the rate measured for a working set of their size where calibration
        # measured several, else from cache within half the last-level cache
        by_working_set = weight_bandwidth_at(cpu_profile, count, graph.weight_bytes)
        dram_rate = bandwidth_at(cpu_profile, count)

        def streams_from_dram(weight_bytes: int) -> bool:  # within 25% of the DRAM figure
            rate = weight_bandwidth_at(cpu_profile, count, weight_bytes)
            return bool(rate and dram_rate and rate <= 1.25 * dram_rate)

        dram_one = bandwidth_at(cpu_profile, 1)

        def activation_rate(working_set: int) -> float | None:  # None at DRAM's rate: the copy bandwidth prices it
            # the one-thread curve, scaled by threads as DRAM reads scale: at two threads the measured 4 MiB point
            # (two cores' L2s holding one weight) priced PicoDet's reorders of 2-4 MiB at 98 GB/s, measured 55
            rate = weight_bandwidth_at(cpu_profile, 1, working_set)
            if not rate or not dram_one or not dram_rate or rate <= 1.25 * dram_one:
                return None
            return rate * dram_rate / dram_one

        return _Figures(f"target '{cpu_profile.name}'", peaks_at(cpu_profile, count), copy, cpu_profile, last_level,
                        weight_bandwidth=by_working_set or bandwidth_at(cpu_profile, count),
                        cache_bandwidth=(bandwidth_at(cpu_profile, count, resident=True)
                                         if cpu_profile.kernel_bandwidth else None),
                        weights_resident=(by_working_set is None and bool(
                            last_level and graph.weight_bytes <= last_level // 2)),
                        l2_bytes=caches.l2_bytes, efficiency=efficiency_at(cpu_profile, count),
                        streams_from_dram=streams_from_dram if by_working_set is not None else None,
                        activation_rate=activation_rate if by_working_set is not None else None,
                        reorder_rate=lambda copy: reorder_bandwidth_at(cpu_profile, count, copy),
                        stream_rate=lambda working_set: stream_bandwidth_at(cpu_profile, count, working_set))

    cpu_figures = cpu_figures_at(cpu_threads)
    # what more threads are measured against: PARALLEL_HALF_WORK was measured on x86 only; a CPU of another
    # architecture (slower cores, where the same work pays for the pool sooner) keeps its class rates
    x86 = cpu_profile.arch.lower() in ("x86_64", "amd64")
    one_thread = cpu_figures_at(1) if cpu_threads > 1 and x86 else None
    single_thread = one_thread or (cpu_figures_at(1) if cpu_threads > 1 else None)  # prices ONE_THREAD_OPS
    # what more threads give the im2col + GEMM Conv class's model (its rate at the priced count over one thread's)
    gemm_conv_gain = None
    if one_thread is not None and cpu_figures.peaks.fp32 and one_thread.peaks.fp32:
        at_count = _efficiency(cpu_figures.owner_efficiency(), "conv", "gemm", "fp32")
        alone = _efficiency(one_thread.owner_efficiency(), "conv", "gemm", "fp32")
        if at_count and alone:
            gemm_conv_gain = at_count * cpu_figures.peaks.fp32 / (alone * one_thread.peaks.fp32)
    acc_figures = (
        _Figures(f"accelerator '{acc.name}'", acc.peak_ops_per_s,
                 target.memory_bandwidth_bytes_per_s, target)
        if acc is not None
        else cpu_figures
    )
    figures = {"cpu": cpu_figures, "accelerator": acc_figures}
    missing: list[str] = []
    for facts in rows:
        if facts["role"] not in ("compute", "qdq") or facts["cost_unknown_reason"]:
            continue
        fig = figures[facts["device"]]
        for text in fig.missing(facts["macs"], facts["execution_dtype"]):
            if text not in missing:
                missing.append(text)
    unavailable: str | None = None
    if missing:
        unavailable = (
            "; ".join(missing)
            + ": latency cannot be estimated (add the figures to the target profile"
            + (", or measure them on the device" if target.name == "host" else "")
            + ")"
        )

    # -- layout copies the CPU's runtime adds (x86 onnxruntime: NCHWc blocks of 8 or 16 channels)
    block = layout_block(cpu_profile)
    layout_copies = graph.layout_copy_bytes.get(block, {}) if block else {}
    if layout_copies:
        assumptions.append(f"onnxruntime's NCHWc layout ({block}-channel blocks) on this CPU: "
                           f"{plural(len(layout_copies), 'node')} pay for reorder copies")
    if block and graph.channels_last_copies:
        assumptions.append("onnxruntime's channels-last int8 convolutions: "
                           f"{plural(len(graph.channels_last_copies), 'node')} pay for 8-bit Transposes")

    # -- roofline per node
    rereads = _recurrent_rereads(graph)
    if rereads:
        assumptions.append(f"recurrent weights read again at every time step ({plural(len(rereads), 'node')})")
    dropped = sum(1 for node in graph.nodes if node.runtime_removed)
    if dropped:
        assumptions.append(f"{plural(dropped, 'node')} onnxruntime's basic optimizers drop or fold into others "
                           "(its own optimized graph says so) priced at nothing")
    fallback_nodes: dict[str, int] = {}
    no_efficiency: set[str] = set()
    nodes: list[NodeProfile] = []
    for facts in rows:
        times: dict = {"compute_time_us": None, "memory_time_us": None, "overhead_us": 0.0,
                       "time_us": None, "bound": "unknown", "peak_ops_per_s": None, "efficiency": None}
        if facts["role"] in ("constant", "fused_qdq", "fused_activation") or \
                graph.nodes[facts["index"]].runtime_removed:  # onnxruntime's basic optimizers drop or fold it
            times.update(compute_time_us=0.0, memory_time_us=0.0, time_us=0.0, bound="none")
            fused = None
            if facts["role"] == "fused_activation" and facts["kind"] in RUN_FUSED and unavailable is None:
                elements = _output_elements(graph, facts["index"])
                # at more threads: split with the host Conv's output tiles, not dispatched as the op alone is (the
                # op alone sped up 1.5-1.7x on two cores, two passes each its own thread-pool hand-off; PP-LCNet's
                # 28 fused HardSwish priced that way made its two-thread estimate +40%)
                alone = _element_time_s(facts, one_thread, elements) if one_thread is not None else None
                fused = (alone[0] / cpu_threads, alone[1]) if alone is not None else \
                    _element_time_s(facts, figures["cpu"], elements)
            if fused is not None:  # still computed per element, in the host Conv's output loop
                times.update(compute_time_us=fused[0] * 1e6, time_us=fused[0] * 1e6, bound="compute",
                             efficiency=fused[1])
        elif facts["cost_unknown_reason"] is None and unavailable is None:
            fig = figures[facts["device"]]
            node = graph.nodes[facts["index"]]
            elements = _output_elements(graph, facts["index"])
            _mark_layout_path(facts, node, block)
            pooled = (facts["device"] == "cpu" and facts["kind"] == "conv"
                      and facts["execution_dtype"] in (None, "fp32"))

            def priced(figures_at: _Figures) -> dict[str, Any]:
                found = _roofline(facts, figures_at, conv_overhead_us if pooled else node_overhead_us,
                                  _priced_elements(node, elements))
                _add_span_time(found, graph, facts, figures_at)
                _apply_depth(found, graph, facts, figures_at)
                _apply_recurrent_split(found, graph, node, facts, figures_at, one_thread,
                                       1 if figures_at is one_thread else cpu_threads, pool_hand_off_us)
                _apply_positions(found, node, facts, figures_at)
                _apply_plain_input(found, graph, node, facts, figures_at, block)
                _apply_block_padding(found, graph, node, facts, block)
                _apply_depthwise_border(found, graph, node, facts, block)
                _apply_depthwise_working_set(found, node, facts, figures_at, block)
                _apply_padding_rows(found, graph, node, facts, block)
                _apply_transposed_traffic(found, graph, node, facts, figures_at)
                _apply_where_values(found, graph, node, facts)
                _apply_runtime_quantize(found, node, facts, figures_at, node_overhead_us)
                return found
            # an element-wise op (float or 8-bit, a Quantize- or DequantizeLinear): on one thread below onnxruntime's
            # split step, past it at its kind's all-core rate (what its model gained, not attenuated by the share
            # curve) plus waking the pool
            split = _element_split(facts, elements, cpu_threads, fig.owner_efficiency()) \
                if facts["device"] == "cpu" and graph.format == "onnx" else None
            alone_only = facts["device"] == "cpu" and (
                (facts["op_type"] in ONE_THREAD_OPS and facts["domain"] in ("", "ai.onnx")) or split == 1)
            times = priced(single_thread if single_thread is not None and alone_only else fig)
            if split is not None and split > 1:
                times["overhead_us"] += pool_hand_off_us
                times["time_us"] += pool_hand_off_us
            element_priced = not facts["macs"] and times["bound"] != "unknown" and times["compute_time_us"]
            share = _parallel_share(facts, elements if element_priced else None, cpu_profile.parallel_half_macs,
                                    _int8_element_key(facts, fig.owner_efficiency()) is not None) \
                if one_thread is not None and facts["device"] == "cpu" and split is None else None
            alone_us: list[float | None] = []

            def compute_alone() -> float | None:  # the node's compute priced at one thread, once
                if not alone_us:
                    alone_us.append(priced(one_thread)["compute_time_us"])
                return alone_us[0]
            if share is not None and times["compute_time_us"] and _price_gemm_conv_threads(
                    times, graph, node, facts, compute_alone, gemm_conv_gain, cpu_threads, conv_overhead_us):
                share = None
            if share is not None and share < 1:  # priced again at one thread only where the gain is attenuated
                _apply_parallel_work(times, share, compute_alone())
            if one_thread is not None and facts["device"] == "cpu":
                _apply_row_split(times, graph, node, facts, block, cpu_threads, compute_alone)
            if facts["index"] in rereads and facts["device"] == "cpu":
                again, working_set = rereads[facts["index"]]
                rate = weight_bandwidth_at(cpu_profile, cpu_threads, working_set) or (
                    fig.cache_bandwidth if fig.cache_bandwidth and fig.l2_bytes and working_set <= fig.l2_bytes
                    else fig.weight_bandwidth or fig.bandwidth)
                _add_memory_time(times, again / rate * 1e6)
            copies = layout_copies.get(facts["index"], ()) if facts["device"] == "cpu" else ()
            transposes = graph.channels_last_copies.get(facts["index"], ()) \
                if block and facts["device"] == "cpu" else ()
            if (copies or transposes) and fig.bandwidth:
                times.update(layout_copy_bytes=sum(copies) + sum(2 * count for _kind, count in transposes),
                             layout_copy_us=_layout_copy_us(copies, fig) + _channels_last_copy_us(transposes, fig))
                # kernels of their own, which hand their work to the thread pool as the blocked Conv does (measured
                # in PP-OCRv2's direction classifier: 4.6 -> 9.0 µs per ReorderInput from one thread to two)
                times["time_us"] += times["layout_copy_us"] + conv_overhead_us * (len(copies) + len(transposes))
            if times.pop("peak_fallback"):
                key = f"{fig.label}: no {facts['execution_dtype']} peak, the fp32 peak is used"
                fallback_nodes[key] = fallback_nodes.get(key, 0) + 1
            if facts["macs"] and times["efficiency"] is None:
                no_efficiency.add(facts["kind"])
                times["efficiency"] = 1.0
        nodes.append(NodeProfile(**facts, **times))

    # -- totals
    unknown_nodes = [n.name for n in nodes if n.cost_unknown_reason]
    if unknown_nodes:
        warnings.append(
            f"{plural(len(unknown_nodes), 'node')} of unknown cost left out of the totals: "
            f"{_names(unknown_nodes)}"
        )
    for key, count in fallback_nodes.items():
        assumptions.append(f"{key} for {plural(count, 'node')}")
    if no_efficiency:
        assumptions.append(
            f"no efficiency factor for {', '.join(sorted(no_efficiency))} (nor a 'default'): "
            "100% of peak assumed, so compute times are optimistic"
        )

    nodes_us: float | None = None
    switch_us: float | None = None
    by_device: dict[str, float] = {}
    if unavailable is None:
        nodes_us = sum(n.time_us for n in nodes if n.time_us is not None)
        if graph.branch_runs and graph.format == "onnx":
            nodes_us += graph.branch_runs * IF_RUN_NODE_OVERHEADS * node_overhead_us
            assumptions.append(f"{plural(graph.branch_runs, 'If node')} run as subgraph calls, each "
                               f"{IF_RUN_NODE_OVERHEADS:g} nodes' dispatch overhead")
        for n in nodes:
            if n.time_us:
                by_device[n.device] = by_device.get(n.device, 0.0) + n.time_us / 1000
        switch_us = 0.0
        if acc is not None and placement.handovers:
            if acc.partition_switch_us is None:
                assumptions.append(
                    f"accelerator '{acc.name}' states no partition_switch_us: hand-overs cost 0"
                )
            else:
                switch_us = placement.handovers * acc.partition_switch_us
        if acc is not None and any(n.device == "accelerator" and n.time_us for n in nodes):
            assumptions.append(
                "accelerator nodes use the target's memory bandwidth (the profile has none of its own)"
            )
        if any(n.time_us for n in nodes):
            assumptions.append(
                f"{node_overhead_us:g} µs of dispatch overhead added to every node "
                "that runs as its own kernel"
            )
            if cpu_profile.call_overhead_us is None and graph.format == "onnx":
                assumptions.append(f"target '{cpu_profile.name}' states no call_overhead_us: the fixed cost of a "
                                   "call is not counted (`edgeopt targets calibrate` measures it)")
            if graph.format != "onnx" and any(n.device == "cpu" and n.time_us for n in nodes):
                # basic-pitch's nmp.tflite: 0.42x of LiteRT + XNNPACK's p50 on an AVX-512 host, 0.78x on AVX2
                assumptions.append(f"CPU nodes priced with onnxruntime's figures (`targets calibrate` times "
                                   f"onnxruntime kernels; edgeopt's defaults were measured with them): a {graph.format} "
                                   "interpreter's kernels differ and no error band is validated for them; "
                                   "`--measure` or `--ssh` gives its own numbers")
    # measured with onnxruntime: a TFLite interpreter's call is not priced with it
    call_us = cpu_profile.call_overhead_us if nodes_us is not None and graph.format == "onnx" else None

    if placement.requires_full_int8 and not placement.full_int8:
        warnings.append(
            f"accelerator '{placement.accelerator}' requires a fully int8 model, but "
            f"{plural(len(placement.int8_offenders), 'node')} compute in float: "
            f"{_names(list(placement.int8_offenders))}"
        )
    if plan.peak_is_lower_bound:
        warnings.append(
            f"size of {plural(len(plan.unknown_tensors), 'activation')} unknown: "
            "the peak activation memory is a lower bound"
        )
    # memory as the runtime that runs the file allocates it: onnxruntime's (its factors from the target), or the
    # TFLite interpreter's with XNNPACK, its default CPU delegate
    runtime_facts = default_runtime_memory(target) if graph.format == "onnx" else None
    if graph.format == "tflite":
        runtime = estimate_tflite_memory(graph, plan, xnnpack=xnnpack)
    else:
        runtime = None if runtime_facts is None else estimate_runtime_memory(graph, plan, runtime_facts, block)
    fits = _fits(target, plan.weight_bytes, plan.peak_activation_bytes, runtime)
    for check in fits:
        if check.fits is False:
            warnings.append(
                f"{check.contents} ({check.required_bytes} B) exceed the {check.memory} "
                f"({check.available_bytes} B)"
            )
    known_fits = [c.fits for c in fits if c.fits is not None]
    # the bands were validated on onnxruntime's kernels and memory: none for a TFLite interpreter's yet
    band = expected_error(target) if graph.format == "onnx" and not any(n.device == "accelerator" for n in nodes) \
        else None
    executed = [n for n in nodes if n.role in ("compute", "qdq")]

    return StaticProfile(
        target=target.name,
        target_kind=target.kind,
        accelerator=placement.accelerator,
        input_shapes={name: list(shape) for name, shape in graph.input_shapes.items()},
        node_overhead_us=node_overhead_us,
        nodes=nodes,
        threads=cpu_threads,
        latency_error=(band.latency_parallel if cpu_threads > 1 and band.latency_parallel else band.latency)
        if band and nodes_us is not None else None,
        memory_error=band.memory if band and runtime is not None else None,
        error_source=band.source if band else None,
        latency_ms=None if nodes_us is None else (nodes_us + (switch_us or 0.0) + (call_us or 0.0)) / 1000,
        nodes_latency_ms=None if nodes_us is None else nodes_us / 1000,
        switch_latency_ms=None if switch_us is None else switch_us / 1000,
        call_overhead_ms=None if call_us is None else call_us / 1000,
        latency_by_device_ms=by_device,
        estimate_unavailable_reason=unavailable,
        macs_total=sum(n.macs for n in nodes if n.macs),
        memory_traffic_bytes=sum(n.bytes_total for n in nodes),
        weight_bytes=plan.weight_bytes,
        weight_bytes_by_dtype=plan.weight_bytes_by_dtype,
        peak_activation_bytes=plan.peak_activation_bytes,
        peak_activation_node=plan.peak_node,
        peak_activation_is_lower_bound=plan.peak_is_lower_bound,
        fits=fits,
        fits_all=all(known_fits) if known_fits else None,
        runtime_memory=runtime,
        unknown_nodes=unknown_nodes,
        unknown_node_count=len(unknown_nodes),
        partitions=placement.num_partitions,
        handovers=placement.handovers,
        accelerator_node_count=sum(1 for n in executed if n.device == "accelerator"),
        cpu_node_count=sum(1 for n in executed if n.device == "cpu"),
        cpu_fallback=dict(placement.cpu_fallback),
        full_int8=placement.full_int8,
        full_int8_required=placement.requires_full_int8,
        full_int8_offenders=list(placement.int8_offenders),
        assumptions=assumptions,
        warnings=warnings,
    )

