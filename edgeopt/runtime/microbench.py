"""Microbenchmarks that ground a CPU target's peaks in measurement (`targets calibrate`).

Throughput is measured the way models will run: onnxruntime sessions on one op
(a large MatMul, a 3x3 Conv), fp32 and int8 (QDQ, as edgeopt quantizes), plus a
streaming copy for memory bandwidth.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import BaseModel, ConfigDict

from edgeopt.targets import TargetProfile


class MicrobenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int
    matmul_fp32_ops_per_s: float
    matmul_int8_ops_per_s: float | None
    conv_fp32_ops_per_s: float
    conv_int8_ops_per_s: float | None
    memory_bandwidth_bytes_per_s: float


def _model(nodes, inputs, outputs, inits) -> bytes:
    graph = helper.make_graph(nodes, "bench", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _matmul(n: int) -> tuple[bytes, dict[str, np.ndarray], int]:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
    data = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    return data, {"x": rng.standard_normal((n, n)).astype(np.float32)}, 2 * n**3


def _conv(c: int, hw: int) -> tuple[bytes, dict[str, np.ndarray], int]:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32), "w")
    data = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])], [w])
    return data, {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}, 2 * c * c * 9 * hw * hw


def _int8(float_model: bytes, feeds: dict[str, np.ndarray]) -> bytes | None:
    from edgeopt.quantize.quantizer import quantize
    from edgeopt.quantize.recipes import Recipe

    model = onnx.ModelProto()
    model.ParseFromString(float_model)
    try:
        return quantize(model, Recipe(mode="static"), [feeds]).SerializeToString()
    except Exception:  # int8 support varies by build; a missing figure is recorded as None
        return None


def microbench_bundle(threads: int | None = None, budget_s: float = 1.5) -> dict[str, Any]:
    """The one-op models (built and quantized here) for the device runner's ``--microbench`` mode."""
    import base64

    models: list[dict[str, Any]] = []

    def add(name: str, data: bytes | None, ops: int) -> None:
        if data is not None:
            models.append({"name": name, "model_b64": base64.b64encode(data).decode("ascii"), "ops": ops})

    mm, mm_feeds, mm_ops = _matmul(512)
    add("matmul_fp32", mm, mm_ops)
    add("matmul_int8", _int8(mm, mm_feeds), mm_ops)
    conv, conv_feeds, conv_ops = _conv(64, 56)
    add("conv_fp32", conv, conv_ops)
    add("conv_int8", _int8(conv, conv_feeds), conv_ops)
    return {"threads": threads or 0, "budget_s": budget_s, "bandwidth_mb": 256, "models": models}


def result_from_payload(payload: dict[str, Any]) -> MicrobenchResult:
    """The runner's microbenchmark JSON as a result (int8 figures are None when quantization failed here)."""
    ops = payload["ops_per_s"]
    return MicrobenchResult(threads=payload["threads"], matmul_fp32_ops_per_s=ops["matmul_fp32"],
                            matmul_int8_ops_per_s=ops.get("matmul_int8"), conv_fp32_ops_per_s=ops["conv_fp32"],
                            conv_int8_ops_per_s=ops.get("conv_int8"),
                            memory_bandwidth_bytes_per_s=payload["memory_bandwidth_bytes_per_s"])


def run_microbenchmarks(threads: int | None = None, budget_s: float = 1.5,
                        progress: Callable[[str], None] = lambda _m: None) -> MicrobenchResult:
    """On this machine, in this process, with the same code the device runner uses."""
    from edgeopt.runtime import device_runner

    progress("building the models")
    payload = device_runner.microbench(microbench_bundle(threads or os.cpu_count() or 1, budget_s),
                                       progress=progress)
    return result_from_payload(payload)


def calibrated_profile(base: TargetProfile, result: MicrobenchResult, when: str,
                       where: str | None = None, device: str | None = None) -> TargetProfile:
    """``base`` with peaks, bandwidth and per-op efficiency replaced by measurements
    (``where``: the SSH host they were taken on, when not this machine; ``device``: what it is)."""
    from edgeopt.targets import PeakThroughput

    fp32 = max(result.matmul_fp32_ops_per_s, result.conv_fp32_ops_per_s)
    int8_values = [v for v in (result.matmul_int8_ops_per_s, result.conv_int8_ops_per_s) if v]
    int8 = max(int8_values) if int8_values else None
    efficiency = dict(base.efficiency)
    efficiency.update({
        "MatMul": round(result.matmul_fp32_ops_per_s / fp32, 3),
        "Gemm": round(result.matmul_fp32_ops_per_s / fp32, 3),
        "Conv": round(result.conv_fp32_ops_per_s / fp32, 3),
    })
    on = f" --ssh {where}" if where else ""
    source = (f"measured by `edgeopt targets calibrate {base.name}{on}` on {when} with {result.threads} thread(s): "
              f"MatMul 512^3 and Conv 64->64 3x3 at 56x56 in onnxruntime (fp32 and QDQ int8), large copy"
              + (f"; device: {device}" if device else ""))
    return base.model_copy(update={
        "peak_ops_per_s": PeakThroughput(fp32=fp32, fp16=base.peak_ops_per_s.fp16, int8=int8),
        "memory_bandwidth_bytes_per_s": result.memory_bandwidth_bytes_per_s,
        "efficiency": efficiency,
        "sources": (*[s for s in base.sources if not s.startswith("measured by `edgeopt")], source),
        "notes": (base.notes + " " if base.notes else "") + f"Calibrated {when}.",
    })
