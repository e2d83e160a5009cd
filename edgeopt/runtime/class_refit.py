"""int8 op classes (and a few others whose reference model holds nodes the estimate prices apart), and the element
kinds, solved through ``static_profile`` itself: the efficiency at which the estimate prices each class's or kind's
reference model at its measured time, at one thread and at all cores (``targets calibrate``;
runtime.microbench.calibrated_profile)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeopt.runtime.class_bench import (
    CLASS_PREFIX,
    SOLVED_AS,
    SOLVED_ONLY,
    THROUGH_ESTIMATE,
    class_models,
)
from edgeopt.runtime.element_bench import element_models

REFIT_STEPS = 18  # bisection steps over log(efficiency): about 0.03% of the value at the end
REFIT_RANGE = (1e-5, 1.5)  # 1.5: the direct fit's cap


def refit_through_estimates(profile: Any, rates: dict[str, float], one_thread: dict[str, float], threads: int
                            ) -> Any:
    """``profile`` with each int8 op class's efficiency re-solved so that ``static_profile`` prices the class's
    reference model at its measured time, at ``threads`` (``efficiency``) and, where calibration measured a
    separate table, at one (``single_thread_efficiency``); ``rates``, ``one_thread``: the runner's ops/s per
    class model at those counts, the call's fixed cost already set apart.

    An int8 class's model is QuantizeLinear -> Conv/MatMul in QDQ -> DequantizeLinear, and the estimate prices
    that Quantize and Dequantize by their own measured element rates: throughput over peak put them inside
    the Conv's efficiency as well (the int8 classes' own models priced 31-47% over their measurement, an int8
    MobileNetV2 +35-41%). The cost of a broadcasting loop's run (``broadcast_span``) is solved the same way: its
    model's Muls are also priced by their elements, and the stem class's (``conv.nchw``): its model's output
    reorder (a third of its time) and its input's read are priced apart (the direct fit put them inside, and
    priced its own model +49%). The other fp32 classes keep the direct fit: what the estimate adds beside their nodes
    (NCHWc reorder copies at the copy bandwidth) is itself a modelled guess, which the direct fit absorbs
    (refitted through it, the depthwise class was priced by its copies alone and real models fell 10-20
    points: an orientation classifier +8% -> -20%). A class whose price does not move with its efficiency, or
    that the estimate's other parts already price at or over its measurement, keeps the direct fit too."""
    import onnx

    from edgeopt.graph.build import build_graph

    models = class_models()
    for field, at, measured_rates in _tables(profile, rates, one_thread, threads):
        table = dict(getattr(profile, field))
        for model_key in [k for k in models if k.endswith("@int8") or k in THROUGH_ESTIMATE]:
            rate = measured_rates.get(CLASS_PREFIX + model_key)
            if not rate or model_key not in table:
                continue
            key = SOLVED_AS.get(model_key, model_key)  # set below only where solved
            data, ops = models[model_key]
            graph = build_graph(onnx.load_from_string(data))
            measured_ms = ops / rate * 1000

            def priced(value: float, key: str = key, graph: Any = graph) -> float:
                return _price(profile, field, table, key, value, graph, at)

            at_high = priced(REFIT_RANGE[1])
            solved = False
            if priced(REFIT_RANGE[0]) <= at_high * 1.0001 or at_high >= measured_ms:
                if key in SOLVED_ONLY:
                    table.pop(key, None)
            else:
                table[key], solved = _bisect_efficiency(lambda value: priced(value) > measured_ms), True
            # solved or directly fitted (a model faster than the estimate can price it), within a possible gain
            if field == "efficiency" and at > 1 and model_key.endswith("@int8") and key in table \
                    and key in profile.single_thread_efficiency:
                bounded = _within_thread_gain(profile, field, table, key, graph, at)
                table[key], solved = bounded, solved or bounded != table[key]
            if solved and key.startswith("matmul.") and "fully_connected" + key[len("matmul"):] not in models:
                table["fully_connected" + key[len("matmul"):]] = table[key]  # a Gemm runs the same kernel
        profile = profile.model_copy(update={field: table})
    return profile


def solve_element_kinds(profile: Any, rates: dict[str, float], one_thread: dict[str, float], threads: int
                        ) -> Any:
    """``profile`` with each element kind's efficiency (runtime.element_bench: an Add, a Sigmoid, a Quantize- or
    DequantizeLinear, a pool...) set so that ``static_profile`` prices the kind's model at its measured time, at
    ``threads`` and, where calibration measured a separate table, at one (``rates``, ``one_thread`` as for
    :func:`refit_through_estimates`, which runs after this: its int8 models hold Quantize and Dequantize nodes).

    The direct fit (output elements over the model's time) held what the estimate adds beside each node's
    elements, which it then added again: the node's dispatch, at more threads the pool's hand-off, a float pool's
    NCHWc reorders (AMD EPYC, one calibration: an Add chain's own model priced +4.7% at one thread and +13% at two,
    QuantizeLinear's +6% and +17%, a MaxPool chain's +14%). A kind whose price does not move with its efficiency
    (a Where at more threads, priced at one) keeps the direct fit. The 8-bit Transposes around channels-last int8
    Convs are charged to those Convs (graph.onnx_layout), not priced as their model's plain Transposes: their
    model's time is taken net of the dispatch the estimate adds per copy."""
    import onnx

    from edgeopt.graph.build import build_graph
    from edgeopt.graph.onnx_layout import ENTERING_CHANNELS_LAST, LEAVING_CHANNELS_LAST

    graphs = {key: (build_graph(onnx.load_from_string(data)), ops) for key, (data, ops) in element_models().items()
              if key not in THROUGH_ESTIMATE}
    for field, at, measured_rates in _tables(profile, rates, one_thread, threads):
        table = dict(getattr(profile, field))
        for key, (graph, ops) in graphs.items():
            rate = measured_rates.get(CLASS_PREFIX + key)
            if not rate or key not in table:
                continue
            measured_ms = ops / rate * 1000
            if key in (ENTERING_CHANNELS_LAST, LEAVING_CHANNELS_LAST):
                per_copy_us = (profile.parallel_conv_overhead_us if at > 1 else None) or profile.node_overhead_us
                kept_ms = measured_ms - len(graph.nodes) * (per_copy_us or 0.0) / 1000
                if kept_ms > 0:
                    table[key] = float(f"{table[key] * measured_ms / kept_ms:.4g}")
                continue

            def priced(value: float, key: str = key, graph: Any = graph) -> float:
                return _price(profile, field, table, key, value, graph, at)

            table[key] = _solve_element_rate(priced, table[key], measured_ms)
        profile = profile.model_copy(update={field: table})
    return profile


def _tables(profile: Any, rates: dict[str, float], one_thread: dict[str, float], threads: int
            ) -> list[tuple[str, int, dict[str, float]]]:
    """(efficiency table, thread count, measured rates) to solve: all cores, and one thread first where calibration
    measured it apart (a node priced at more threads gains from them by its one-thread price, its work's share of
    the gain, analysis.profile.PARALLEL_HALF_WORK, so that table must already be solved)."""
    tables = [("efficiency", threads, rates)]
    if threads > 1 and profile.single_thread_efficiency:
        tables.insert(0, ("single_thread_efficiency", 1, one_thread))
    return tables


def _price(profile: Any, field: str, table: dict[str, float], key: str, value: float, graph: Any, at: int) -> float:
    """The estimate's ms for ``graph`` at ``at`` threads with ``table`` (``field``), ``key`` set to ``value``."""
    from edgeopt.analysis.profile import static_profile

    trial = profile.model_copy(update={field: {**table, key: value}})
    return static_profile(graph, trial, threads=at).nodes_latency_ms or 0.0


def _solve_element_rate(priced: Any, direct: float, measured_ms: float) -> float:
    """The efficiency at which ``priced`` (ms at an efficiency) meets ``measured_ms``, from the ``direct`` fit: an
    element node's time is a fixed part plus its elements over the rate, so two prices give the answer, checked by a
    third (else bisection); ``direct`` where the price does not move with the efficiency or its fixed part alone
    reaches the measurement."""
    at_direct, at_double = priced(direct), priced(2 * direct)
    scaled = 2 * direct * (at_direct - at_double)  # the part that goes as 1 / efficiency, times the efficiency
    fixed = at_direct - scaled / direct
    if scaled <= at_direct * 1e-4 or measured_ms <= fixed:
        return direct
    solved = min(max(scaled / (measured_ms - fixed), REFIT_RANGE[0]), REFIT_RANGE[1])
    if abs(priced(solved) / measured_ms - 1) > 0.002:  # not of that form (a roofline turning to memory)
        solved = _bisect_efficiency(lambda value: priced(value) > measured_ms)
        if abs(priced(solved) / measured_ms - 1) > 0.002:  # no efficiency prices it so
            return direct
    return float(f"{solved:.4g}")


def _within_thread_gain(profile: Any, field: str, table: dict[str, float], key: str, graph: Any, threads: int
                        ) -> float:
    """``table[key]``, an int8 class's all-core efficiency solved through the estimate, moved where needed so that
    the class model's kernel node(s) gain between 1x and ``threads``x over their one-thread price (``profile``
    holds the solved one-thread table). The solve gives the kernel what the model's measured time leaves after
    the estimate's other nodes, and in the int8 models most of the time is not the kernel's: a DequantizeLinear
    and the 8-bit Transposes around a channels-last Conv, which onnxruntime runs on one thread (measured at two
    threads, AMD EPYC: 0.8-1.0x of one). About 20 calibrations of one 2-core VM solved the shallow 1x1 int8 class
    at 0.14 to 1.01 (its kernel 0.5x to 3.9x of one thread) from raw class-model gains of 1.18-1.22x, and moved
    an int8 MobileNetV2's two-thread estimate from +11% to +39%."""
    from edgeopt.analysis.profile import static_profile

    def kernel_us(trial: Any, at: int) -> float:
        return sum(node.time_us or 0.0 for node in static_profile(graph, trial, threads=at).nodes
                   if node.role == "compute")

    alone = kernel_us(profile, 1)

    def gain(value: float) -> float:
        return alone / max(kernel_us(profile.model_copy(update={field: {**table, key: value}}), threads), 1e-12)

    solved = table[key]
    found = gain(solved)
    if alone <= 0 or 1.0 <= found <= threads:
        return solved
    wanted = 1.0 if found < 1.0 else float(threads)
    return _bisect_efficiency(lambda value: gain(value) < wanted)  # the gain grows with the efficiency


def _bisect_efficiency(too_low) -> float:
    """The efficiency in REFIT_RANGE where ``too_low(value)`` (true below it, false above) turns false, by bisection
    over its logarithm (REFIT_STEPS), to four significant digits."""
    low, high = np.log(REFIT_RANGE[0]), np.log(REFIT_RANGE[1])
    for _ in range(REFIT_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if too_low(np.exp(middle)) else (low, middle)
    return float(f"{np.exp((low + high) / 2):.4g}")
