"""Keep in float the layers whose int8 kernels are slower than their float ones.

onnxruntime's int8 kernels do not win everywhere. On this project's x86 CI CPU a first
convolution over one input channel ran 3x slower as QLinearConv than as an fp32 NCHWc
kernel, and a depthwise convolution over 16 channels at 32x32 1.8x slower; together they
cancelled what int8 gained in the pointwise layers of a pruned MobileNetV2-style CNN
(benchmarks/prune_int8.py). Per-node profiles of the float and the int8 model rank the
layers where int8 costs more; each is then kept in float in turn, and stays so only when
the whole model, timed side by side with the current one, gets faster. The Dequantize /
Quantize pair that a float island adds is paid for in that measurement, not guessed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict

from edgeopt.events import Events
from edgeopt.stages.quantize.recipes import COMPUTE_OPS, Recipe
from edgeopt.stages.quantize.recurrent import RECURRENT_OPS
from edgeopt.fsutil import temporary_folder

MAX_TRIALS = 6
# A trial must be at least this much faster than the current model (trial / current latency):
# smaller differences are within the noise of a short side-by-side timing.
ACCEPT_BELOW = 0.97
# The ranking is by measured per-node cost, so two misses in a row mean the rest will miss too.
MAX_MISSES_IN_A_ROW = 2
# Each trial re-quantizes (re-calibrates) the model: on large models that is what the time goes to.
MAX_SECONDS = 120.0
# Profiled kernel times have microsecond resolution: a node is a suspect when int8 is 10% slower.
SLOWER_BY = 1.1


class SpeedTrial(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: list[str]  # kept in float by this trial (the node and what must stay float with it)
    float_us: float | None = None  # the node's kernel time in the float model (profiled)
    int8_us: float | None = None  # ... and in the int8 model
    latency_ratio: float | None = None  # whole model with the node in float / without, side by side
    accepted: bool = False
    note: str | None = None


def node_costs(measurement: Any, model_bytes: bytes | Path) -> dict[str, float]:
    """Median kernel time per graph node (µs per run) from a runner measurement with per-op
    timings (onnxruntime's profiler, on this machine or a device). Fused kernels are charged to
    the node they map back to (``measure.map_op_names``). ``model_bytes``: the model, or its file."""
    from edgeopt.runtime.measure import map_op_names

    if isinstance(model_bytes, Path):
        model = onnx.load(str(model_bytes), load_external_data=False)
    else:
        model = onnx.ModelProto()
        model.ParseFromString(model_bytes)
    map_op_names(measurement, [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node])
    costs: dict[str, float] = {}
    for op in measurement.per_op or []:
        if op.source_nodes and op.median_us is not None:
            costs[op.source_nodes[0]] = costs.get(op.source_nodes[0], 0.0) + op.median_us
    return costs


def profile_node_costs(model_bytes: bytes | Path, *, label: str, threads: int = 1,
                       feeds: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """``node_costs`` measured on this machine (the runner in a child process), on ``feeds`` (one batch,
    at the shapes the model will run at) when given, else on the runner's own inputs (free dims at 1)."""
    from edgeopt.runtime.measure import measure_locally

    with temporary_folder("edgeopt-node-costs-") as tmp:
        path = model_bytes if isinstance(model_bytes, Path) else Path(tmp) / f"{label}.onnx"
        if not isinstance(model_bytes, Path):
            path.write_bytes(model_bytes)
        inputs = None
        if feeds is not None:
            inputs = Path(tmp) / "inputs.npz"
            np.savez(inputs, **feeds)
        measurement = measure_locally(path, runs=5, warmup=3, threads=threads, profile_ops=True, inputs=inputs)
    return node_costs(measurement, model_bytes)


# Ops onnxruntime runs as their own int8 kernels (QLinearAdd, QLinearMul, QLinearConcat, ...) when
# DequantizeLinear feeds them and QuantizeLinear takes their output. Unlike data movement (Reshape,
# Transpose, MaxPool: int8 in, int8 out, never dearer), these can cost more than their float form:
# basic-pitch's input batch norm (Mul, Add) measured 2.5 ms as QLinearMul/QLinearAdd against 0.9 ms float.
ELEMENTWISE_INT8_OPS = frozenset({"Add", "Mul", "Sigmoid", "LeakyRelu", "Concat", "AveragePool",
                                  "GlobalAveragePool", "Softmax", "Where", "ReduceMean"})


def elementwise_int8_nodes(model_bytes: bytes | Path) -> set[str]:
    """Names of the QDQ model's ``ELEMENTWISE_INT8_OPS`` nodes that a float copy can replace: onnxruntime
    fuses DequantizeLinear → node → QuantizeLinear into one int8 kernel when every input is dequantized,
    and one of them here is a constant's. Kept float (``nodes_to_exclude``), the node's constant stays
    float and the fusion no longer applies; a node that reads only activations would be fused again
    whatever the quantizer was told, so it is not listed."""
    if isinstance(model_bytes, Path):
        model = onnx.load(str(model_bytes), load_external_data=False)
    else:
        model = onnx.ModelProto()
        model.ParseFromString(model_bytes)
    constants = {t.name for t in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] in constants for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input}
    requantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input}
    found = set()
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in ELEMENTWISE_INT8_OPS and node.name and inputs and all(i in dequantized for i in inputs) \
                and any(dequantized[i] for i in inputs) and requantized & set(node.output):
            found.add(node.name)
    return found


def int8_layers(float_model: onnx.ModelProto, int8_model: bytes | Path, excluded: Iterable[str]
                ) -> tuple[set[str], set[str]]:
    """(the nodes of ``float_model`` that run int8 kernels in ``int8_model``: its Conv/MatMul/Gemm/LSTM
    layers not in ``excluded`` and its elementwise int8 kernels, and the latter alone)."""
    elementwise = elementwise_int8_nodes(int8_model)
    skip = set(excluded)
    layers = {n.name for n in float_model.graph.node if n.name not in skip
              and (n.op_type in COMPUTE_OPS + RECURRENT_OPS or n.name in elementwise)}
    return layers, elementwise


# Activations onnxruntime fuses into a float Conv's kernel (no kernel of their own in the float profile) that
# the int8 model runs as kernels of their own: HardSwish as a QLinearAdd gate and a QLinearMul
# (hard_activations.py), Sigmoid and LeakyRelu as lookup kernels.
FUSED_IN_FLOAT = frozenset({"HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu"})


def with_activations(float_model: onnx.ModelProto, float_costs: dict[str, float], int8_costs: dict[str, float],
                     layers: set[str]) -> dict[str, float]:
    """``int8_costs`` with each layer charged for the int8 kernels of the activation that float fuses into it:
    a Conv whose one reader is a ``FUSED_IN_FLOAT`` node with no kernel of its own in ``float_costs``. The
    float Conv's time includes that activation; compared with the QLinearConv alone, PP-LCNet's int8 layers
    looked 2x faster where, with their QLinearAdd and QLinearMul, they were not faster at all. (The gate's Add
    is named after its activation with "_add": hard_activations.py.) The layer's exclusion group holds the
    activation: kept float, both go back to one fused float kernel."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in float_model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    charged = dict(int8_costs)
    for node in float_model.graph.node:
        if node.name not in layers or node.op_type != "Conv" or node.name not in int8_costs or not node.output:
            continue
        after = readers.get(node.output[0], [])
        if len(after) != 1 or after[0].op_type not in FUSED_IN_FLOAT or after[0].name in float_costs:
            continue
        activation = after[0].name
        charged[node.name] += int8_costs.get(activation, 0.0) + int8_costs.get(f"{activation}_add", 0.0)
    return charged


def slower_in_int8(float_costs: dict[str, float], int8_costs: dict[str, float], quantized: set[str]
                   ) -> list[tuple[str, float, float]]:
    """(node, float µs, int8 µs) for quantized nodes whose int8 kernel is clearly slower, worst first."""
    rows = [(name, float_costs[name], int8_costs[name]) for name in quantized
            if name in float_costs and name in int8_costs and int8_costs[name] > float_costs[name] * SLOWER_BY]
    return sorted(rows, key=lambda row: row[1] - row[2])


def keep_slow_layers_float(
    suspects: list[tuple[str, float, float]],
    int8_bytes: bytes,
    recipe: Recipe,
    *,
    evaluate: Callable[[Recipe], tuple[bytes | None, object, str | None, object]],
    meets_floor: Callable[[object], bool],
    time_against: Callable[[bytes, bytes], float],
    exclusion_group: Callable[[str], list[str]],
    events: Events | None = None,
    max_seconds: float = MAX_SECONDS,
) -> tuple[bytes, Recipe, object | None, object | None, list[SpeedTrial]]:
    """Keep in float what ``suspects`` (``slower_in_int8``: worst first) name, when the whole model gets
    faster (``time_against(current, trial)`` → trial / current latency) and still meets the fidelity
    floor (``evaluate`` quantizes and measures a recipe).

    First all suspects at once: the slow kernels of a MobileNet (a dozen depthwise convolutions) each
    save too little alone to show in a timing, and the Quantize/Dequantize pairs between float
    islands only go away when the islands join. When that is not accepted, greedily one by one. No
    trial starts after ``max_seconds``.

    Returns (model bytes, recipe, fidelity and coverage of the last accepted trial or None, trials)."""
    current, fidelity, coverage, trials, misses = int8_bytes, None, None, [], 0
    started = time.monotonic()
    say = (events or Events()).note

    def attempt(nodes: list[str], float_us: float, int8_us: float, note: str | None = None) -> bool:
        nonlocal current, recipe, fidelity, coverage
        trial = SpeedTrial(nodes=nodes, float_us=round(float_us, 2), int8_us=round(int8_us, 2), note=note)
        trials.append(trial)
        candidate_recipe = recipe.excluding(nodes)
        data, trial_fidelity, rejection, trial_coverage = evaluate(candidate_recipe)
        if data is None:
            trial.note = "; ".join(filter(None, (note, rejection)))
        elif not meets_floor(trial_fidelity):
            trial.note = "; ".join(filter(None, (note, "below the fidelity floor")))
        else:
            trial.latency_ratio = round(time_against(current, data), 4)
            trial.accepted = trial.latency_ratio < ACCEPT_BELOW
        if trial.accepted:
            current, recipe, fidelity, coverage = data, candidate_recipe, trial_fidelity, trial_coverage
        return trial.accepted

    if len(suspects) > 1 and max_seconds >= 0:
        together = list(dict.fromkeys(n for name, _, _ in suspects for n in exclusion_group(name)))
        say(f"speed: trying all {len(suspects)} slower layers in float at once")
        if attempt(together, sum(s[1] for s in suspects), sum(s[2] for s in suspects), "all slower layers at once"):
            return current, recipe, fidelity, coverage, trials
    for name, float_us, int8_us in suspects[:MAX_TRIALS]:
        if name in recipe.nodes_to_exclude:
            continue  # joined the float set with an earlier node's group
        if time.monotonic() - started > max_seconds:
            say(f"speed: stopped after {max_seconds:.0f} s")
            break
        say(f"speed: trying {name} in float ({int8_us:.1f} µs int8 vs {float_us:.1f} µs float)")
        if attempt(exclusion_group(name), float_us, int8_us):
            misses = 0
        else:
            misses += 1
            if misses >= MAX_MISSES_IN_A_ROW:
                break
    return current, recipe, fidelity, coverage, trials
