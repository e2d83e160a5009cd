"""Memory as the runtime allocates it: a model's peak RSS increase on a target, part by part.

What a process running the model holds beyond its interpreter, in the parts the device runner measures
(`runtime.measure.MemorySummary`):

* **session**: what loading a one-op model adds (the runtime's session, kernel registry), what each
  further node adds (its kernel and plan entries) and what each initializer adds beyond its data (its
  tensor and name: 1.7 KiB on x86, which a QDQ model's scales and zero points make count), and, where the
  model runs int8 kernels, what their code and tables hold (``int8_kernels_bytes``, and
  ``int8_first_run_bytes`` on the first run); measured by `targets calibrate`.
* **weights as loaded**: each weight times the copies the runtime keeps of it once loaded, by the kind of
  the node that reads it (MatMul and LSTM weights are kept pre-packed; on x86 convolution weights in the
  blocked NCHWc layout), and by its dtype where measured apart (``conv.int8``: an int8 kernel's weights).
  Unlisted kinds keep one copy. A weight an If branch defines (silero-vad's, in Constant nodes) is held once
  more: onnxruntime keeps the subgraph's own tensor beside the session's (``subgraph_weight_copies``; the
  branches not taken count alike).
* **first run**: what the session's first run sets up besides the activations.
* **activation arena**: onnxruntime's BFC arena simulated allocation by allocation (analysis.arena): the
  regions the first run writes, which grow by doubling, then the memory pattern's block the second run
  adds, and the outputs beside it; with the tensors the runtime adds on x86 (Graph.runtime_tensors: its NCHWc
  reorders' and int8 Transposes' copies; an int8 Conv's scratch, which every run takes outside the pattern);
  times the target's arena factor (measured / simulated on a probe model: about 1.05).
* **loading transient**: while the session is created, the parsed file, the runtime's copy and each
  re-laid-out copy are held at once, and glibc's default allocator keeps part of what is freed meanwhile
  (its dynamic mmap threshold rises to the size of the first large buffer freed, so later ones come from
  the heap and stay): ``load_weight_copies``, by kind, measured as a user's process sees it (convolution
  weights 3.5x on x86, 2.7x held at once). A weight of 32 MiB or more is always mapped alone and returned
  when freed, so it counts only the copies held at once (``load_weight_copies_held``). Plus the packed copy
  of the largest weight the runtime pre-packs one at a time (MatMul, Gemm, LSTM), plus one more for a
  weight rewritten at load (a BatchNormalization or constant Add/Mul folded into a Conv's weights, a
  Constant node turned into an initializer), plus what constant folding computes (``folded_copies`` per
  byte of the folded nodes' outputs: the folded tensors, their protobuf and runtime copies, kept by the
  allocator; the branches not taken fold too), plus what a branch's own weights hold beyond that
  (``subgraph_load_copies``). The run reuses what loading freed, so the transient counts only where it exceeds
  what the run needs:

    run need  = weights as loaded + first run + arena
    peak      = session + max(run need, load copies x weights)     (the measured ``peak_rss_increase_bytes``)

The interpreter baseline (Python, numpy and the runtime imported) is reported beside it when the target
states it: the measured increase is over that baseline, and a board's RAM must hold both.

The factors come from the target's ``runtime_memory`` (measured by `targets calibrate` on the device
with probe models, `runtime.memory_probes.memory_probe_models`), else from the defaults below, measured the
same way with onnxruntime's CPU provider and named in the estimate's ``source``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgeopt.analysis.arena import simulate_arena
from edgeopt.analysis.memory import LiveTensor, MemoryPlan, resolve_alias
from edgeopt.graph.model import Graph, Node, tensor_size_bytes
from edgeopt.graph.onnx_execution import FOLDED_INTO_CONV
from edgeopt.graph.onnx_layout import plain_copy_name
from edgeopt.targets import RuntimeMemory, TargetProfile

__all__ = ["MemoryPart", "RuntimeMemoryEstimate", "default_runtime_memory", "estimate_runtime_memory"]

MiB = 1 << 20
# glibc's dynamic mmap threshold stops rising here on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX, mallopt(3)):
# a buffer this large is always mapped on its own and unmapped when freed, so the allocator keeps none of it
MAPPED_ALONE_BYTES = 32 * MiB

# Measured with `runtime.memory_probes.memory_probe_models` (onnxruntime 1.32.0, CPU provider, one thread) on an
# x86_64 host with AVX-512 VNNI (Intel Xeon, 2026-12-05): the one-op session 9.4 MiB, 3.2 KiB more per node
# and 1.7 KiB per initializer, its first run 0.3 MiB (a session running int8 kernels 384 KiB more, and 224 KiB
# more on its first run: AMD EPYC, 2026-12-05); once loaded, one copy of each fp32 weight, 1.2x of an
# int8 convolution's and 1.1x of an int8 MatMul's; while loading, as glibc's default allocator leaves it,
# convolution weights 3.5x (held at once: 2.7x, the parsed, NCHWc-reordered and runtime copies), MatMul
# 1.5x (1.2x) and LSTM 1.5x (1.0x) plus the packed copy of the largest (pre-packed one weight at a time), int8
# convolutions 2.1x (1.4x), int8 MatMuls 1.8x (1.0x) plus the largest; a Sigmoid/Add chain's arena 1.05x the
# simulated one (analysis.arena; 2.1x its planned peak). The fp32 held-at-once figures are also what an AVX2 host
# (AMD EPYC) measured on 2026-12-03. A weight an If branch defines (the subgraph probe, 256 KiB weights; AMD EPYC,
# AVX-512 VNNI, 2026-12-05): one more copy once loaded, 1.9 more at the load peak (2.7 for 4 MiB weights).
PACKED_KINDS = ("matmul", "fully_connected", "lstm", "gru", "rnn")
X86_ONNXRUNTIME = RuntimeMemory(
    session_fixed_bytes=int(9.4 * MiB), session_per_node_bytes=3200, session_per_initializer_bytes=1700,
    first_run_bytes=int(0.3 * MiB), int8_kernels_bytes=384 * 1024, int8_first_run_bytes=224 * 1024,
    weight_copies={"default": 1.0, "conv.int8": 1.2, "matmul.int8": 1.1, "fully_connected.int8": 1.1},
    subgraph_weight_copies=1.0, subgraph_load_copies=1.9,
    load_weight_copies={"default": 2.0, "conv": 3.5, "matmul": 1.5, "fully_connected": 1.5, "lstm": 1.5,
                        "gru": 1.5, "rnn": 1.5, "conv.int8": 2.1, "matmul.int8": 1.8, "fully_connected.int8": 1.8},
    load_weight_copies_held={"default": 2.0, "conv": 2.7, "matmul": 1.2, "fully_connected": 1.2, "lstm": 1.0,
                             "gru": 1.0, "rnn": 1.0, "conv.int8": 1.4, "matmul.int8": 1.0,
                             "fully_connected.int8": 1.0},
    packed_one_at_a_time=PACKED_KINDS,
    arena_factor=1.05,
    source="edgeopt's defaults for onnxruntime's CPU provider on x86_64 (measured by its memory probes)")
# aarch64 wheels of onnxruntime are built without the NCHWc convolution layout (MLAS_USE_ARM_NEON_NCHWC is a
# build option). The same probes on aarch64 (onnxruntime 1.32.0 under qemu user-mode emulation, the test
# suite's emulated board, 2026-12-05): once loaded, fp32 weights 1.0x, int8 convolutions 2.3x and int8 MatMuls
# 1.7x; while loading with the default allocator, convolution weights 1.0x, MatMul 1.25x, LSTM 1.5x, int8
# convolutions 3.15x and int8 MatMuls 2.4x (held at once: 1.0x, 1.0x, 1.0x, 2.5x, 1.65x), each plus the
# largest pre-packed one. The session and arena sizes measured there include the emulator's own memory, so
# the x86 figures stand for them, as they do for a subgraph's weights (how the runtime holds a subgraph, not
# the CPU).
ARM_INT8_KEPT = {"conv.int8": 2.3, "matmul.int8": 1.7, "fully_connected.int8": 1.7}
ARM_ONNXRUNTIME = X86_ONNXRUNTIME.model_copy(update={
    "weight_copies": {"default": 1.0, **ARM_INT8_KEPT},
    "load_weight_copies": {"default": 2.0, "conv": 1.0, "matmul": 1.25, "fully_connected": 1.25, "lstm": 1.5,
                           "gru": 1.5, "rnn": 1.5, "conv.int8": 3.15, "matmul.int8": 2.4,
                           "fully_connected.int8": 2.4},
    "load_weight_copies_held": {"default": 2.0, "conv": 1.0, "matmul": 1.0, "fully_connected": 1.0, "lstm": 1.0,
                                "gru": 1.0, "rnn": 1.0, "conv.int8": 2.5, "matmul.int8": 1.65,
                                "fully_connected.int8": 1.65},
    "source": "edgeopt's defaults for onnxruntime's CPU provider on aarch64 (weight copies from its memory probes "
              "on an emulated aarch64 board, session sizes from x86); `edgeopt targets calibrate T --ssh HOST` "
              "measures the device"})
class MemoryPart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str  # baseline | session | weights | first_run | arena | loading
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


def _weight_readers(graph: Graph) -> list[tuple[Node, str]]:
    """(the kernel that reads it, weight name) for every weight input of every node: a weight read through a
    fused DequantizeLinear (or a folded node) counts as read by the kernel it is fused into."""
    by_index = {node.index: node for node in graph.nodes}
    return [(by_index.get(node.attached_to, node), name) for node in graph.nodes for name in node.inputs
            if name in graph.weights]


def _copies(readers: list[tuple[Node, str]], weights: frozenset[str], table: dict[str, float]) -> dict[str, float]:
    """Copies held of each weight: the largest factor in ``table`` among the kinds of the kernels that read it;
    a weight no node reads keeps the default."""
    default = table.get("default", 1.0)
    copies = dict.fromkeys(weights, default)
    read: set[str] = set()
    for reader, name in readers:
        keys = (f"{reader.kind}.{reader.dtype}", reader.kind) if reader.dtype else (reader.kind,)
        factor = next((table[k] for k in keys if k in table), default)
        copies[name] = max(copies[name], factor) if name in read else factor
        read.add(name)
    return copies


def largest_packed_weight(readers: list[tuple[Node, str]], kinds: tuple[str, ...], sizes: dict[str, int]) -> int:
    """The largest weight read by a kernel of ``kinds`` (pre-packed one at a time while loading); 0 if none."""
    return max((sizes[name] for reader, name in readers if reader.kind in kinds), default=0)


def rewritten_at_load(graph: Graph) -> set[str]:
    """Weights the runtime writes anew while loading: those of a Conv with a BatchNormalization or constant
    Add/Mul folded into it, and Constant nodes' values (turned into initializers)."""
    by_index = {node.index: node for node in graph.nodes}
    folded_into = {node.attached_to for node in graph.nodes
                   if node.role == "fused_activation" and node.op_type in FOLDED_INTO_CONV}
    rewritten = {name for node in graph.nodes if node.role == "constant" for name in node.outputs}
    for index in folded_into:
        conv = by_index.get(index)
        if conv is not None:
            rewritten.update(name for name in conv.inputs if name in graph.weights)
    return rewritten


def folded_at_load_bytes(graph: Graph) -> int:
    """Bytes the runtime's constant folding computes while loading: the outputs of nodes that read only
    constants (a weight sliced, concatenated or reshaped), Constant nodes aside (their values are weights). The
    If branches not taken fold too (graph.onnx_branches counts them: a nested branch may fold weights its
    enclosing branch holds)."""
    return graph.dormant_folded_bytes + sum(tensor_size_bytes(graph.tensors.get(name)) or 0 for node in graph.nodes
                                            if node.role == "constant" and node.op_type != "Constant"
                                            for name in node.outputs)


def estimate_runtime_memory(graph: Graph, plan: MemoryPlan, runtime: RuntimeMemory,
                            layout_block: int | None = None) -> RuntimeMemoryEstimate:
    """``layout_block``: the channel block of onnxruntime's NCHWc layout on the target's CPU (None: not used)."""
    weights = plan.weight_bytes
    sizes = {name: tensor_size_bytes(graph.tensors.get(name)) or 0 for name in graph.weights}
    readers = _weight_readers(graph)
    kept = _copies(readers, graph.weights, runtime.weight_copies)
    held = _copies(readers, graph.weights, runtime.load_weight_copies)
    rewritten = rewritten_at_load(graph)
    held_alone = held if runtime.load_weight_copies_held is None else _copies(
        readers, graph.weights, runtime.load_weight_copies_held)
    # the If branches not taken load too (graph/onnx_branches.py): their weights at the default factor
    dormant = graph.dormant_weight_bytes * runtime.weight_copies.get("default", 1.0)
    # a subgraph's own weights, dormant or inlined, are held beside the session's copy
    in_subgraphs = graph.dormant_weight_bytes + sum(size for name, size in sizes.items()
                                                    if name in graph.subgraph_tensors)
    weights_loaded = int(round(sum(sizes[name] * factor for name, factor in kept.items()) + dormant
                               + in_subgraphs * runtime.subgraph_weight_copies))
    # a weight glibc maps on its own is returned when freed: only the copies held at once count for it
    loading = int(round(sum(sizes[name] * ((held_alone if sizes[name] >= MAPPED_ALONE_BYTES else held)[name]
                                          + (name in rewritten)) for name in held)))
    loading += largest_packed_weight(readers, runtime.packed_one_at_a_time, sizes)
    loading += int(round(dormant + in_subgraphs * runtime.subgraph_load_copies))
    folded = folded_at_load_bytes(graph)
    loading += int(round(folded * runtime.folded_copies))
    # the tensors the runtime adds (its layout copies' outputs, kernels' scratch); a blocked output's plain copy is
    # what the caller receives
    added = graph.runtime_tensors.get(layout_block or 0, ())
    copies = [LiveTensor(t.name, t.start, t.end, t.bytes) for t in added]
    copied = {t.name for t in copies}
    outputs = [resolve_alias(name, graph.aliases) for name in graph.outputs]
    returned = [plain_copy_name(name) if plain_copy_name(name) in copied else name for name in outputs]
    simulated = simulate_arena([*plan.tensors, *copies], graph.inputs,
                               graph.layout_tensor_bytes.get(layout_block or 0), returned,
                               temporary=[t.name for t in added if t.kernel_scratch])
    arena = int(round(simulated.resident_bytes * runtime.arena_factor))
    nodes = sum(1 for node in graph.nodes if node.role != "constant") + graph.dormant_nodes
    initializers = len(graph.weights) + graph.dormant_weights
    # a session that runs int8 kernels holds their code and tables too
    int8 = any(node.dtype == "int8" and node.role in ("compute", "qdq") for node in graph.nodes)
    session = (runtime.session_fixed_bytes + runtime.session_per_node_bytes * max(0, nodes - 1)
               + runtime.session_per_initializer_bytes * initializers + (runtime.int8_kernels_bytes if int8 else 0))
    first_run = runtime.first_run_bytes + (runtime.int8_first_run_bytes if int8 else 0)
    run_need = weights_loaded + first_run + arena
    transient = max(0, loading - run_need)
    run_peak = session + run_need
    load_peak = session + max(weights_loaded, loading)
    peak = session + run_need + transient
    parts = [
        MemoryPart(key="session", label=f"session (runtime, kernel registry; {nodes} nodes, {initializers} "
                                        "initializers)", bytes=session),
        MemoryPart(key="weights", label=f"weights as loaded ({weights_loaded / max(weights, 1):.2f}x the "
                                        "file's: pre-packed and re-laid-out copies"
                                        + (", If branches' own copies" if in_subgraphs else "") + ")" if weights else
                   "weights as loaded", bytes=weights_loaded),
        MemoryPart(key="first_run", label="first run's set-up", bytes=first_run),
        MemoryPart(key="arena", label=f"activation arena (onnxruntime's arena simulated: first run "
                                      f"{simulated.first_run_bytes / MiB:.1f} MiB, then the memory pattern's "
                                      f"{simulated.pattern_bytes / MiB:.1f} MiB block; planned peak "
                                      f"{plan.peak_activation_bytes / MiB:.1f} MiB)", bytes=arena),
        MemoryPart(key="loading", label="loading transient beyond what the run needs (file, runtime and "
                                        "re-laid-out copies at once" + (f"; {folded / MiB:.1f} MiB folded from "
                                        "constants" if folded else "") + ")", bytes=transient),
    ]
    baseline = runtime.interpreter_baseline_bytes
    if baseline is not None:
        parts.insert(0, MemoryPart(key="baseline", label="interpreter baseline (Python, numpy, runtime)",
                                   bytes=baseline))
    return RuntimeMemoryEstimate(
        parts=parts, load_peak_increase_bytes=load_peak, run_peak_increase_bytes=run_peak,
        peak_increase_bytes=peak, baseline_bytes=baseline,
        total_bytes=None if baseline is None else baseline + peak, source=runtime.source)
