"""Memory as the runtime allocates it: a model's peak RSS increase on a target, part by part.

What a process running the model holds beyond its interpreter, in the parts the device runner measures
(`runtime.measure.MemorySummary`):

* **session fixed cost**: what a session of a one-op model adds (the runtime's session, thread pool,
  kernel registry, first-run set-up); measured by `targets calibrate`.
* **weights as loaded**: each weight times the copies the runtime keeps of it, by the kind of the node
  that reads it (onnxruntime on x86 rewrites convolution weights into its blocked NCHWc layout and keeps
  the reordered copies; MatMul weights are pre-packed). Unlisted kinds keep one copy.
* **activation arena**: the liveness plan's peak (`analysis.memory.liveness_plan`) times the arena
  factor: onnxruntime's arena holds the first run's allocations, and its memory pattern adds one planned
  block from the second run on.
* **loading transient**: while the session is created, the parsed file and the runtime's own tensors
  hold the weights at once (``load_weight_copies``); freed afterwards, that memory is reused by the arena.

    run peak  = session + weights as loaded + arena
    load peak = session + max(weights as loaded, load_weight_copies x weights)
    peak      = max(run peak, load peak)       (the measured ``peak_rss_increase_bytes``)

The interpreter baseline (Python, numpy and the runtime imported) is reported beside it when the target
states it: the measured increase is over that baseline, and a board's RAM must hold both.

The factors come from the target's ``runtime_memory`` (measured by `targets calibrate` on the device
with probe models, `runtime.memory_probes`), else from the defaults below, measured the same way with
onnxruntime's CPU provider and named in the estimate's ``source``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgeopt.analysis.memory import MemoryPlan
from edgeopt.graph.model import Graph, tensor_size_bytes
from edgeopt.targets import RuntimeMemory, TargetProfile

__all__ = ["MemoryPart", "RuntimeMemoryEstimate", "default_runtime_memory", "estimate_runtime_memory"]

MiB = 1 << 20

# Measured with `runtime.memory_probes` (onnxruntime 1.32.0, CPU provider, one thread) on an x86_64 AVX2
# host (AMD EPYC, 2026-12-03): the one-op session 16.6 MiB; convolution weights 3.3x (NCHWc), MatMul 1.3x,
# a Sigmoid/Add chain's arena 2.4x its planned peak; a 16 MiB MatMul held twice while loading.
X86_ONNXRUNTIME = RuntimeMemory(
    session_fixed_bytes=int(16.6 * MiB), weight_copies={"conv": 3.3, "matmul": 1.3, "fully_connected": 1.3},
    load_weight_copies=2.0, arena_factor=2.4,
    source="edgeopt's defaults for onnxruntime's CPU provider on x86_64 (measured by its memory probes)")
# aarch64 wheels of onnxruntime are built without the NCHWc convolution layout (MLAS_USE_ARM_NEON_NCHWC is a
# build option), so convolution weights keep about one copy (as on x86 with the layout transform off: 1.0x-1.3x).
ARM_ONNXRUNTIME = X86_ONNXRUNTIME.model_copy(update={
    "weight_copies": {"conv": 1.2, "matmul": 1.3, "fully_connected": 1.3},
    "source": "edgeopt's defaults for onnxruntime's CPU provider on aarch64 (x86 probes, convolutions without "
              "the NCHWc layout); `edgeopt targets calibrate T --ssh HOST` measures the device"})


class MemoryPart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str  # baseline | session | weights | arena | loading
    label: str
    bytes: int


class RuntimeMemoryEstimate(BaseModel):
    """The estimate, part by part; ``peak_increase_bytes`` compares with a measured ``peak_rss_increase_bytes``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    parts: list[MemoryPart]
    load_peak_increase_bytes: int
    run_peak_increase_bytes: int
    peak_increase_bytes: int
    baseline_bytes: int | None  # the interpreter with the runtime imported, when the target states it
    total_bytes: int | None  # baseline + peak increase: what the board's RAM must hold
    source: str


def default_runtime_memory(target: TargetProfile) -> RuntimeMemory | None:
    """The target's measured runtime memory, else the defaults for its architecture; None where the model
    does not run in onnxruntime on a CPU (MCUs, TFLite targets: their memory is weights + activations)."""
    if target.runtime_memory is not None:
        return target.runtime_memory
    if target.runtime != "onnxruntime" or target.kind == "mcu":
        return None
    arch = target.arch.lower()
    return ARM_ONNXRUNTIME if arch.startswith(("arm", "aarch64")) else X86_ONNXRUNTIME


def _copies(graph: Graph, runtime: RuntimeMemory) -> dict[str, float]:
    """Copies kept of each weight: the largest factor among the kinds of the nodes that read it (a weight
    read through a fused DequantizeLinear counts as read by the kernel it is fused into); a weight no node
    reads keeps the default."""
    by_index = {node.index: node for node in graph.nodes}
    default = runtime.weight_copies.get("default", 1.0)
    copies = dict.fromkeys(graph.weights, default)
    read: set[str] = set()
    for node in graph.nodes:
        reader = by_index.get(node.attached_to, node)
        keys = (f"{reader.kind}.{reader.dtype}", reader.kind) if reader.dtype else (reader.kind,)
        factor = next((runtime.weight_copies[k] for k in keys if k in runtime.weight_copies), default)
        for name in node.inputs:
            if name in copies:
                copies[name] = max(copies[name], factor) if name in read else factor
                read.add(name)
    return copies


def estimate_runtime_memory(graph: Graph, plan: MemoryPlan, runtime: RuntimeMemory) -> RuntimeMemoryEstimate:
    copies = _copies(graph, runtime)
    weights = plan.weight_bytes
    loaded = sum((tensor_size_bytes(graph.tensors.get(name)) or 0) * factor for name, factor in copies.items())
    weights_loaded = int(round(loaded))
    arena = int(round(plan.peak_activation_bytes * runtime.arena_factor))
    session = runtime.session_fixed_bytes
    transient = max(0, int(round(runtime.load_weight_copies * weights)) - weights_loaded)
    run_peak = session + weights_loaded + arena
    load_peak = session + weights_loaded + transient
    peak = max(run_peak, load_peak)
    parts = [
        MemoryPart(key="session", label="session fixed cost (runtime, threads, first run)", bytes=session),
        MemoryPart(key="weights", label=f"weights as loaded ({weights_loaded / max(weights, 1):.2f}x the "
                                        "file's: pre-packed and re-laid-out copies)" if weights else
                   "weights as loaded", bytes=weights_loaded),
        MemoryPart(key="arena", label=f"activation arena ({runtime.arena_factor:g}x the planned peak)", bytes=arena),
        MemoryPart(key="loading", label="loading transient (file and runtime copies at once; reused by the arena)",
                   bytes=transient),
    ]
    baseline = runtime.interpreter_baseline_bytes
    if baseline is not None:
        parts.insert(0, MemoryPart(key="baseline", label="interpreter baseline (Python, numpy, runtime)",
                                   bytes=baseline))
    return RuntimeMemoryEstimate(
        parts=parts, load_peak_increase_bytes=load_peak, run_peak_increase_bytes=run_peak,
        peak_increase_bytes=peak, baseline_bytes=baseline,
        total_bytes=None if baseline is None else baseline + peak, source=runtime.source)
