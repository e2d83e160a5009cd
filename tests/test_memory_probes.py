"""The runtime memory factors from the memory probes' RSS increases (runtime.memory_probes.runtime_memory_from_probes),
on hand-made probe readings: what each probe's figure becomes in the target profile."""

from __future__ import annotations

from edgeopt.runtime.memory_probes import runtime_memory_from_probes

MiB = 1 << 20
SESSION = 10 * MiB
CONV = 4 * 256 * 256 * 3 * 3 * 4  # the conv probe's four fp32 weights: 9 MiB
MATMUL, MATMUL_LARGEST = 4 * 1024 * 1024 * 4, 1024 * 1024 * 4  # four 4 MiB weights, pre-packed one at a time
LSTM, LSTM_LARGEST = 2 * 4 * 768 * 768 * 4, 4 * 768 * 768 * 4
CONV_INT8 = 4 * 256 * 256 * 3 * 3  # int8 weights alone (their per-channel scales are not counted)
SUBGRAPH = 2 * 16 * 256 * 256 * 4  # the subgraph probe's weights: 16 of 256 KiB in each of two branches
# the arena probe (a chain of Sigmoid/Add on 3 MiB tensors) as analysis.arena simulates it: its first run writes
# three 3 MiB tensors in three regions, then the memory pattern's 9 MiB block lands in a fourth
ARENA_SIMULATED = 6 * 64 * 112 * 112 * 4
# the int8 kernels probe's initializers, all of them (a 16x16x3x3 int8 weight, its scales and zero points, the
# activations' scales and zero points)
INT8_KERNELS_WEIGHTS = 16 * 16 * 9 + 16 * 4 + 16 + 4 * (4 + 1)


def reading(after_load: float, load_peak: float | None = None, default: float | None = None) -> dict[str, int]:
    found = {"baseline": 50 * MiB, "after_load": int(after_load), "load_peak": int(load_peak or after_load),
             "run_peak": int(after_load)}
    if default is not None:
        found["default_allocator_load_peak"] = int(default)
    return found


def probes(with_runner_8: bool) -> dict[str, dict[str, int]]:
    found = {
        "session": {**reading(SESSION), "run_peak": SESSION + 300_000},
        "nodes": reading(SESSION + 998 * 3000),
        "conv": reading(SESSION + CONV, SESSION + 2.5 * CONV, SESSION + 3.5 * CONV if with_runner_8 else None),
        "matmul": reading(SESSION + MATMUL, SESSION + 1.25 * MATMUL + MATMUL_LARGEST,
                          SESSION + 1.5 * MATMUL + MATMUL_LARGEST if with_runner_8 else None),
        "lstm": reading(SESSION + LSTM, SESSION + LSTM + LSTM_LARGEST),
        # the probe's arena as simulated (3 live tensors of 3 MiB: 18.4 MiB resident), measured 1.5x that
        "arena": {**reading(SESSION), "run_peak": SESSION + 300_000 + int(1.5 * ARENA_SIMULATED)},
    }
    if with_runner_8:
        found["initializers"] = reading(SESSION + 499 * 3000 + 500 * 1500)
        # two branches' 16 weights each, held twice once loaded and three times at the load peak, beside their
        # 37 nodes' and 33 initializers' share of the session
        share = 36 * 3000 + 33 * 1500
        found["subgraph"] = reading(SESSION + share + 2 * SUBGRAPH, SESSION + share + 3 * SUBGRAPH)
        found["conv_int8"] = reading(SESSION + 1.2 * CONV_INT8, SESSION + 1.4 * CONV_INT8, SESSION + 2.1 * CONV_INT8)
        # the int8 kernels probe: its 12 nodes' and 11 initializers' share, its weights, 400 KB more once loaded;
        # its first run 200 KB more than the one-op session's
        loaded = SESSION + 11 * 3000 + 11 * 1500 + INT8_KERNELS_WEIGHTS + 400_000
        found["int8_kernels"] = {**reading(loaded), "run_peak": loaded + 300_000 + 200_000}
    return found


def test_each_probe_sets_its_factor():
    memory = runtime_memory_from_probes(probes(with_runner_8=True), "hand-made")
    assert memory.session_fixed_bytes == SESSION and memory.first_run_bytes == 300_000
    assert memory.session_per_node_bytes == 3000 and memory.session_per_initializer_bytes == 1500
    assert memory.weight_copies["conv"] == 1.0 and memory.weight_copies["conv.int8"] == 1.2
    # loading as a user's process sees it (the default allocator), and the copies held at once beside it
    assert memory.load_weight_copies["conv"] == 3.5 and memory.load_weight_copies_held["conv"] == 2.5
    assert memory.load_weight_copies["conv.int8"] == 2.1 and memory.load_weight_copies_held["conv.int8"] == 1.4
    # a pre-packed probe's largest weight is set apart in both
    assert memory.load_weight_copies["matmul"] == 1.5 and memory.load_weight_copies_held["matmul"] == 1.25
    # the LSTM probe without a default-allocator reading keeps its held copies
    assert memory.load_weight_copies["lstm"] == memory.load_weight_copies_held["lstm"] == 1.0
    assert memory.packed_one_at_a_time == ("matmul", "fully_connected", "lstm", "gru", "rnn")
    assert memory.arena_factor == 1.5  # against the simulated arena, not the planned peak (2x less)
    assert memory.subgraph_weight_copies == 1.0 and memory.subgraph_load_copies == 2.0
    assert memory.int8_kernels_bytes == 400_000 and memory.int8_first_run_bytes == 200_000


def test_a_runner_before_version_8_gives_the_held_copies_and_no_int8_factors():
    memory = runtime_memory_from_probes(probes(with_runner_8=False), "hand-made")
    assert memory.load_weight_copies["conv"] == 2.5 and memory.load_weight_copies_held is None
    assert "conv.int8" not in memory.load_weight_copies and memory.session_per_initializer_bytes == 0
    assert memory.subgraph_weight_copies == memory.subgraph_load_copies == 0.0
    assert memory.int8_kernels_bytes == memory.int8_first_run_bytes == 0
    missing = probes(with_runner_8=False)
    del missing["arena"]
    assert runtime_memory_from_probes(missing, "hand-made") is None


def test_onnxruntime_holds_a_branchs_weights_twice():
    """The real subgraph probe in a fresh process, as `targets calibrate` runs it: onnxruntime keeps the
    weights an If branch defines beside the session's copy (1.0 more measured on x86 with onnxruntime 1.32)."""
    import base64
    import sys

    import pytest

    from edgeopt.runtime.device_runner import memory_probes
    from edgeopt.runtime.memory_probes import memory_probe_models

    if sys.platform != "linux":
        pytest.skip("the probes read /proc")
    models = memory_probe_models()
    found = memory_probes([{"name": name, "model_b64": base64.b64encode(models[name]).decode("ascii")}
                           for name in ("session", "nodes", "initializers", "subgraph", "arena")], 1)
    readings = {**probes(with_runner_8=False), **found}
    memory = runtime_memory_from_probes(readings, "measured")
    assert 0.7 <= memory.subgraph_weight_copies <= 1.4
    assert memory.subgraph_load_copies >= memory.subgraph_weight_copies
