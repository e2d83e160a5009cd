"""Memory probes: small models whose RSS increases, each loaded and run in a fresh process by the device runner
(`runtime.device_runner.memory_probes`), give the factors of analysis.runtime_memory for a target (its
`targets.RuntimeMemory`): the one-op session, what nodes and initializers add, how many copies of each kind of
weight the runtime keeps and holds while loading, an If branch's own weights, the int8 kernels' fixed cost and
the arena against its simulation.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeopt.runtime.microbench import model_bytes, op_stack, qdq_pair, qdq_stack
from edgeopt.targets import RuntimeMemory


def _chain(count: int, shape: list[int]) -> bytes:
    nodes, previous = [], "x"
    for index in range(count):
        nodes += [helper.make_node("Sigmoid", [previous], [f"s{index}"]),
                  helper.make_node("Add", [f"s{index}", previous], [f"a{index}"])]
        previous = f"a{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                  [helper.make_tensor_value_info(previous, TensorProto.FLOAT, shape)], [])


def _constant_chain(count: int, shape: list[int]) -> bytes:
    """``count`` Adds in a chain, each of its own one-value initializer."""
    nodes, inits, previous = [], [], "x"
    for index in range(count):
        inits.append(numpy_helper.from_array(np.full([1], index, np.float32), f"c{index}"))
        nodes.append(helper.make_node("Add", [previous, f"c{index}"], [f"a{index}"]))
        previous = f"a{index}"
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                       [helper.make_tensor_value_info(previous, TensorProto.FLOAT, shape)], inits)


def _lstm(hidden: int, steps: int) -> bytes:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), name)
             for name in ("w", "r")]
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden)
    return model_bytes([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, hidden])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 1, 1, hidden])], inits)


def _subgraph_weights(count: int, side: int) -> bytes:
    """An If on the input's data whose two branches each add ``count`` weights of their own (side x side) to it."""
    rng = np.random.default_rng(0)

    def branch(name: str) -> onnx.GraphProto:
        nodes, inits, previous = [], [], "x"
        for index in range(count):
            weight = f"{name}_w{index}"
            inits.append(numpy_helper.from_array(rng.standard_normal((side, side)).astype(np.float32), weight))
            nodes.append(helper.make_node("Add", [previous, weight], [f"{name}_a{index}"]))
            previous = f"{name}_a{index}"
        nodes.append(helper.make_node("Identity", [previous], [f"{name}_y"]))
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                                                 [side, side])], inits)

    nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=branch("then"), else_branch=branch("else"))]
    return model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [side, side])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [side, side])],
                       [numpy_helper.from_array(np.array(0, np.float32), "zero")])


def _int8_kernels() -> bytes:
    """A small QDQ model onnxruntime runs with its int8 kernels (a 16-channel 3x3 Conv, a residual Add, a global
    pool: QLinearConv with its channels-last Transposes, QLinearAdd, QLinearGlobalAveragePool, Q and DQ), its
    weights and tensors a few KiB: what a session holds for using int8 kernels at all."""
    rng = np.random.default_rng(0)
    nodes, inits = qdq_pair("x", 8.0 / 255, 128, TensorProto.UINT8)
    inits += [numpy_helper.from_array(rng.integers(-100, 100, (16, 16, 3, 3)).astype(np.int8), "w_q"),
              numpy_helper.from_array(np.full(16, 0.01, np.float32), "w_scale"),
              numpy_helper.from_array(np.zeros(16, np.int8), "w_zp")]
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=0))
    nodes.append(helper.make_node("Conv", ["x_dq", "w_dq"], ["c"], pads=[1, 1, 1, 1]))
    for stage, (op, inputs) in enumerate([("Add", ["c_dq", "x_dq"]), ("GlobalAveragePool", ["a0_dq"])]):
        more, extra = qdq_pair("c" if stage == 0 else f"a{stage - 1}", 8.0 / 255, 128, TensorProto.UINT8)
        nodes += more
        inits += extra
        nodes.append(helper.make_node(op, inputs, [f"a{stage}"]))
    more, extra = qdq_pair("a1", 8.0 / 255, 128, TensorProto.UINT8)
    return model_bytes([*nodes, *more], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                       [helper.make_tensor_value_info("a1_dq", TensorProto.FLOAT, [1, 16, 1, 1])], [*inits, *extra])


def memory_probe_models() -> dict[str, bytes]:
    """What `runtime_memory_from_probes` reads: a one-op session, one of a thousand nodes and one of five
    hundred nodes with an initializer each; convolution, MatMul and LSTM weights (9, 16 and 18 MiB), int8
    convolution and MatMul weights (2.3 and 4 MiB, QDQ); weights If branches define (2 x 16 of 256 KiB); an
    activation chain (three 3 MiB tensors live at once)."""
    return dict(_built_probe_models())


@functools.cache
def _built_probe_models() -> dict[str, bytes]:
    # built once per process: a calibration sends them and reads them again for the factors
    return {
        "session": _chain(1, [1, 4]),
        "nodes": _chain(PROBE_NODES // 2, [1, 4]),
        "initializers": _constant_chain(PROBE_NODES // 2, [1, 4]),
        "conv": op_stack("Conv", 4, (256, 256, 3, 3), [1, 256, 14, 14], pads=[1, 1, 1, 1]),
        "matmul": op_stack("MatMul", 4, (1024, 1024), [1, 8, 1024]),
        "lstm": _lstm(768, 4),
        "conv_int8": qdq_stack("Conv", 4, (256, 256, 3, 3), [1, 256, 14, 14], pads=[1, 1, 1, 1]),
        "matmul_int8": qdq_stack("MatMul", 4, (1024, 1024), [1, 8, 1024]),
        "subgraph": _subgraph_weights(16, 256),
        "int8_kernels": _int8_kernels(),
        "arena": _chain(10, [1, 64, 112, 112]),
    }


PROBE_NODES = 1000
PACKED_PROBES = ("matmul", "lstm", "matmul_int8")  # onnxruntime pre-packs their weights, one at a time
# the weight probes and the (kind or kind.dtype) keys of the copies tables they set
WEIGHT_PROBES = {"conv": ("conv",), "matmul": ("matmul", "fully_connected"), "lstm": ("lstm", "gru", "rnn"),
                 "conv_int8": ("conv.int8",), "matmul_int8": ("matmul.int8", "fully_connected.int8")}


def runtime_memory_from_probes(probes: dict[str, dict[str, int]], source: str) -> RuntimeMemory | None:
    """The runtime memory factors (targets.RuntimeMemory) from the probes' RSS increases; None if any is missing.

    The device runner loads the probes with glibc told to return freed large buffers at once
    (MALLOC_MMAP_THRESHOLD_), so the copies kept once loaded are what the session holds rather than what the
    allocator happened to keep (that slack is reused by the run). The weight probes' load peaks are taken as a
    user's process sees them, with glibc's default allocator, whose dynamic mmap threshold keeps part of what
    loading freed (where a device runner before version 8 did not measure that, the held copies stand)."""
    from edgeopt.analysis.arena import simulate_arena
    from edgeopt.analysis.memory import liveness_plan
    from edgeopt.graph.build import build_graph

    models = {name: onnx.load_from_string(data) for name, data in memory_probe_models().items()}
    # not in calibrations before runner 8: the fp32 kinds' factors stand, initializers cost nothing apart; the
    # subgraph probe is newer (host recipe 41)
    optional = {"conv_int8", "matmul_int8", "initializers", "subgraph", "int8_kernels"}
    if set(models) - optional - set(probes):
        return None
    session, arena = probes["session"], probes["arena"]

    def copies(name: str, phase: str) -> float:
        """The probe's weights held in ``phase`` beyond the one-op session, as a multiple of its file's (its
        weights alone: a QDQ probe's scales and zero points are the activations' and a few bytes); while
        loading, a pre-packed probe's largest weight (its packed copy) is set apart."""
        sizes = [numpy_helper.to_array(t).nbytes for t in models[name].graph.initializer if len(t.dims) > 1]
        packed = max(sizes) if phase != "after_load" and name in PACKED_PROBES else 0
        return round(max(1.0, (probes[name][phase] - session["after_load"] - packed) / sum(sizes)), 2)

    arena_graph = build_graph(models["arena"])
    simulated = simulate_arena(liveness_plan(arena_graph).tensors, arena_graph.inputs,
                               returned=arena_graph.outputs).resident_bytes
    first_run = max(0, session["run_peak"] - session["after_load"])
    per_node = max(0, (probes["nodes"]["after_load"] - session["after_load"]) // (PROBE_NODES - 2))
    per_initializer = 0
    if "initializers" in probes:  # its nodes' share set apart: a QDQ model has one or two initializers per node
        count = PROBE_NODES // 2
        per_initializer = max(0, (probes["initializers"]["after_load"] - session["after_load"]
                                  - per_node * (count - 1)) // count)
    subgraph_kept, subgraph_load = _subgraph_copies(models["subgraph"], probes.get("subgraph"),
                                                    session["after_load"], per_node, per_initializer)
    int8_loaded, int8_first_run = _int8_kernel_costs(models["int8_kernels"], probes.get("int8_kernels"), session,
                                                     per_node, per_initializer, first_run)
    measured_probes = {probe: kinds for probe, kinds in WEIGHT_PROBES.items() if probe in probes}
    kept = {kind: copies(probe, "after_load") for probe, kinds in measured_probes.items() for kind in kinds}
    held = {kind: copies(probe, "load_peak") for probe, kinds in measured_probes.items() for kind in kinds}
    # a user's process: glibc's default allocator keeps part of what loading freed (runner 8 on)
    by_default = {kind: copies(probe, "default_allocator_load_peak") for probe, kinds in measured_probes.items()
                  if "default_allocator_load_peak" in probes[probe] for kind in kinds}
    return RuntimeMemory(
        interpreter_baseline_bytes=session["baseline"], session_fixed_bytes=session["after_load"],
        session_per_node_bytes=per_node, session_per_initializer_bytes=per_initializer,
        first_run_bytes=first_run, weight_copies=kept,
        int8_kernels_bytes=int8_loaded, int8_first_run_bytes=int8_first_run,
        subgraph_weight_copies=subgraph_kept, subgraph_load_copies=subgraph_load,
        load_weight_copies={"default": 2.0, **held, **by_default},
        load_weight_copies_held={"default": 2.0, **held} if by_default else None,
        # by the reading kernel's kind (an int8 MatMul's is matmul)
        packed_one_at_a_time=tuple(kind for probe in PACKED_PROBES for kind in WEIGHT_PROBES[probe] if "." not in kind),
        # the simulation is the model; the factor only adds what it misses (a run's own buffers)
        arena_factor=round(max(1.0, (arena["run_peak"] - arena["after_load"] - first_run) / simulated), 2),
        source=source)


def _int8_kernel_costs(model: onnx.ModelProto, probe: dict[str, int] | None, session: dict[str, int], per_node: int,
                       per_initializer: int, first_run: int) -> tuple[int, int]:
    """What the int8 kernels probe holds beyond a float session of its size, once loaded and on its first run (its
    nodes', initializers' and weights' share set apart; its tensors, a few KiB, are not); (0, 0) without it."""
    if probe is None:
        return 0, 0
    weights = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    base = (session["after_load"] + per_node * (len(model.graph.node) - 1)
            + per_initializer * len(model.graph.initializer) + weights)
    return (max(0, probe["after_load"] - base),
            max(0, probe["run_peak"] - probe["after_load"] - first_run))


def _subgraph_copies(model: onnx.ModelProto, probe: dict[str, int] | None, session: int, per_node: int,
                     per_initializer: int) -> tuple[float, float]:
    """The copies of a weight an If branch defines that the runtime holds beyond one, once loaded and at the load
    peak (the subgraph probe's branches' weights; its nodes' and initializers' session share set apart); (0, 0)
    without the probe."""
    if probe is None:
        return 0.0, 0.0
    graphs = [model.graph, *(attr.g for node in model.graph.node for attr in node.attribute if attr.HasField("g"))]
    weights = sum(numpy_helper.to_array(t).nbytes for g in graphs for t in g.initializer if len(t.dims) > 1)
    nodes = sum(len(g.node) for g in graphs)
    base = session + per_node * (nodes - 1) + per_initializer * sum(len(g.initializer) for g in graphs)

    def beyond_one(phase: str) -> float:
        return round(max(0.0, (probe[phase] - base) / weights - 1.0), 2)

    return beyond_one("after_load"), beyond_one("load_peak")
