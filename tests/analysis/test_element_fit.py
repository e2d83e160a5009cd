"""Element kinds' rates solved through the estimate (runtime.class_refit.solve_element_kinds): what the estimate
adds beside a node's elements (its dispatch, the pool's hand-off, a float pool's reorders) is counted once."""

from __future__ import annotations

import onnx
import pytest

from edgeopt.analysis.profile import static_profile
from edgeopt.runtime.class_bench import CLASS_PREFIX, fitted_efficiency
from edgeopt.runtime.class_refit import solve_element_kinds
from edgeopt.runtime.element_bench import element_models

from .helpers import cpu_target

# efficiencies (of the fp32 peak) the made-up CPU runs each kind at, at two threads and at one
TRUTH = {"add": 0.05, "quantize": 0.03, "dequantize": 0.03, "add.int8": 0.02, "max_pool": 0.3, "where": 0.002,
         "reduce": 0.004, "transpose.nhwc": 0.06}
TRUTH_ONE = {"add": 0.06, "quantize": 0.05, "dequantize": 0.03, "add.int8": 0.03, "max_pool": 0.4,
             "where": 0.003, "reduce": 0.0045, "transpose.nhwc": 0.08}
DISPATCH_US, POOLED_DISPATCH_US = 0.8, 1.4
# priced at one thread at two (a Where, onnxruntime's DequantizeLinear): their all-core efficiency prices nothing
ONE_THREAD_AT_ALL_CORES = ("where", "dequantize")


def test_element_kinds_are_solved_so_their_own_models_are_priced_at_their_measured_time():
    """Each kind's model timed on a CPU that runs it as the estimate prices it with TRUTH: the direct fit (elements
    over the model's time) holds the nodes' dispatch and prices its own model over that time (by 4 dispatches and
    more); the solve gives back TRUTH at both thread counts. The channels-last Transposes, charged to int8 Convs
    rather than priced as their model's plain Transposes, are taken net of the dispatch the estimate adds per copy
    (the pooled one at two threads). A Where or a DequantizeLinear at two threads is priced at one thread: nothing to
    solve there, the direct fit stays."""
    models = element_models()
    actual = cpu_target(arch="x86_64", cores=2, peak_threads=2, peak_ops_per_s={"fp32": 2e11, "int8": 8e11},
                        single_thread_peak_ops_per_s={"fp32": 1e11, "int8": 4e11}, efficiency=TRUTH,
                        memory_bandwidth_bytes_per_s=4e11,
                        single_thread_efficiency=TRUTH_ONE, node_overhead_us=DISPATCH_US,
                        parallel_conv_overhead_us=POOLED_DISPATCH_US)

    def rates(threads: int) -> dict[str, float]:
        """ops/s of each kind's model as this CPU runs it: its ops over the estimate's time with TRUTH; the
        Transposes as an int8 Conv's copies are priced (their elements at the kind's rate, plus a dispatch each)."""
        found = {}
        for key in TRUTH:
            data, ops = models[key]
            if key == "transpose.nhwc":
                table, peak = (TRUTH_ONE, 1e11) if threads == 1 else (TRUTH, 2e11)
                nodes = len(onnx.load_from_string(data).graph.node)
                dispatch_us = DISPATCH_US if threads == 1 else POOLED_DISPATCH_US
                seconds = ops / (peak * table[key]) + nodes * dispatch_us / 1e6
            else:
                seconds = static_profile(onnx.load_from_string(data), actual, threads=threads).nodes_latency_ms / 1000
            found[CLASS_PREFIX + key] = ops / seconds
        return found

    full, one = rates(2), rates(1)
    direct = actual.model_copy(update={"efficiency": fitted_efficiency(full, 2e11, 8e11),
                                       "single_thread_efficiency": fitted_efficiency(one, 1e11, 4e11)})
    for key in ("add", "quantize", "transpose.nhwc"):  # what the solve is for
        assert direct.efficiency[key] < 0.97 * TRUTH[key], key
        assert direct.single_thread_efficiency[key] < 0.98 * TRUTH_ONE[key], key

    solved = solve_element_kinds(direct, full, one, threads=2)
    for key in TRUTH:
        assert solved.single_thread_efficiency[key] == pytest.approx(TRUTH_ONE[key], rel=3e-3), key
        if key not in ONE_THREAD_AT_ALL_CORES:
            assert solved.efficiency[key] == pytest.approx(TRUTH[key], rel=3e-3), key
        else:
            assert solved.efficiency[key] == direct.efficiency[key], key
    # the solved rates price each model at its measured time again
    data, ops = models["add"]
    assert static_profile(onnx.load_from_string(data), solved, threads=2).nodes_latency_ms / 1000 == \
        pytest.approx(ops / full[CLASS_PREFIX + "add"], rel=3e-3)
