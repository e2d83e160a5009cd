"""How far a static estimate is expected to be from the measurement: the error band each estimate carries.

The bands come from validation on models the cost model was not fitted on (benchmarks/estimate_accuracy.py: the
public real-model zoo, the bundled and synthetic models): the relative error within which 90% of the validated
runs fell. They hold where they were measured: onnxruntime on a CPU whose peaks were measured (the
``host`` target, calibrated automatically or by `targets calibrate host`), by architecture. A target profile
that states its own ``estimate_error`` (someone validated it on their device) uses that instead. Elsewhere
(published profiles never checked against their device, accelerators) the band is unknown, and says so.
"""

from __future__ import annotations

from edgeopt.targets import EstimateError, TargetProfile

# Validated bands by architecture, for the measured host with onnxruntime's CPU provider.
VALIDATED_ON_HOST: dict[str, EstimateError] = {
    "x86_64": EstimateError(
        latency=0.33, latency_parallel=0.38, memory=0.20,
        source="edgeopt's validation on models the host's figures were not fitted on (benchmarks/estimate_accuracy.py: "
               "13 published models, the digits CNN, synthetic CNNs, a transformer, an LSTM and an MLP in fp32 and "
               "int8; onnxruntime 1.32): 90% of runs within ±22% (latency, 1 thread, 29 models on an Intel AVX-512 VNNI "
               "host; ±8-12% on an AMD Zen 4 one with sessions 28-30's cost models, its 13 published models ±8-10%; "
               "±17% in session 24; ±33% on an AVX2 host with an earlier cost model, the band kept until it is "
               "re-validated there), ±38% at two threads (Intel; ±23-33% on the AMD host; 30-41% from one run to "
               "the next), and ±20% (peak memory increase, 1 thread, both; onnxruntime's arena simulated)"),
}


def expected_error(target: TargetProfile) -> EstimateError | None:
    """The error band of ``target``'s estimates, or None where nothing validated them."""
    if target.estimate_error is not None:
        return target.estimate_error
    measured = target.peak_ops_per_s.fp32 is not None and any(
        source.startswith("measured") for source in target.sources)
    if (target.name == "host" and target.kind == "cpu" and target.runtime == "onnxruntime" and measured
            and target.accelerator is None):
        return VALIDATED_ON_HOST.get(target.arch.lower().replace("amd64", "x86_64"))
    return None
