"""Measured latency and memory: the device runner in a separate process.

The runner (device_runner.py) is one self-contained file; here it runs on this
machine in a child process so the toolchain's own memory never pollutes the RSS
figures. The SSH transport runs the same file on a device.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeopt.errors import EXIT_REMOTE, EdgeoptError, InputError, first_validation_error
from edgeopt.fsutil import temporary_folder

RUNNER_PATH = Path(__file__).with_name("device_runner.py")


class LatencySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p50: float
    p90: float
    p99: float
    mean: float
    stdev: float
    min: float
    max: float


class MemorySummary(BaseModel):
    """The runner's RSS by phase, each increase over ``rss_before_load_bytes`` (the interpreter with the runtime
    imported and the samples read: the baseline). Loading: the session's steady size after it was created and
    the peak while it was created (parsed file and runtime copies of the weights); running: the peak of the
    first and timed runs (the activation arena). The profiled pass and the emitted outputs are not counted."""

    model_config = ConfigDict(extra="forbid")

    rss_before_load_bytes: int
    peak_rss_bytes: int
    peak_rss_increase_bytes: int
    after_load_increase_bytes: int | None = None  # None: a runner before version 4
    load_peak_increase_bytes: int | None = None
    run_peak_increase_bytes: int | None = None
    phases_measured: bool = False  # False: no resettable peak (not Linux), the phase peaks are the process's


class OpTiming(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str  # the runtime's (possibly fused) node name
    op_type: str | None = None
    calls: int
    total_us: float
    median_us: float | None = None  # per call, from a separate profiled pass
    source_nodes: list[str] = []  # the model's node names it maps back to


class Upload(BaseModel):
    """How the model reached a device over SSH (a measurement's ``ssh``)."""

    model_config = ConfigDict(extra="forbid")

    host: str
    uploaded_bytes: int
    model_cached: bool


class Measurement(BaseModel):
    """One runner result, validated: what `profile --measure` reports per device."""

    model_config = ConfigDict(extra="forbid")

    runner_version: int
    model: str
    runtime: dict[str, Any]
    threads: int
    runs: int
    warmup: int
    load_ms: float
    first_run_ms: float
    latency_ms: LatencySummary
    memory: MemorySummary
    per_op: list[OpTiming] | None = None
    # "profiler": the runtime's own (onnxruntime); "op-by-op": each .tflite operator timed alone, fed what it
    # saw in the whole model (the TFLite interpreters have no profiler in Python): their sum is not the p50
    per_op_method: str | None = None
    per_op_skipped: list[dict[str, str]] | None = None  # operators not timed alone, with the reason
    inputs: dict[str, Any]
    input_samples: int = 1
    device: dict[str, Any]
    loadavg_after: list[float] | None = None
    device_after: dict[str, Any] = {}  # temperature, frequency, throttling after the runs
    # --emit-outputs: the samples' outputs (npz, base64). Kept out of reports: the host compares
    # them with its own outputs and records the comparison instead (see outputs_arrays).
    outputs: dict[str, Any] | None = Field(default=None, exclude=True)
    ssh: Upload | None = Field(None, exclude_if=lambda value: value is None)  # measured over SSH (set by edgeopt)

    def outputs_arrays(self) -> list[dict[str, Any]] | None:
        """The emitted outputs as one {output name: array} per sample; None when not emitted or skipped."""
        if not self.outputs or self.outputs.get("encoding") != "npz+base64":
            return None
        import base64
        import io

        import numpy as np

        from edgeopt.runtime.device_runner import load_samples

        return load_samples(np, io.BytesIO(base64.b64decode(self.outputs["data"])))


class MeasurementError(EdgeoptError):
    """The measuring process (here or on a device) failed: exit code 3, like other device failures."""

    exit_code = EXIT_REMOTE


class UnsupportedOpError(InputError):
    """The model uses an op the runtime has no kernel for (a TFLite custom op): bad input, exit 2."""


def parse_runner_output(stdout: str, where: str) -> Measurement:
    try:
        payload = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    except json.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise MeasurementError(f"the runner on {where} printed no result", "rerun with --debug to see its output")
    if "error" in payload:
        kind = payload.get("kind", "failed")
        if kind == "unsupported-op":
            raise UnsupportedOpError(f"cannot measure on {where}: {payload['error']}",
                                     "run it where the library that registers the op is linked into the runtime, "
                                     "or profile it statically (-t TARGET without --measure)")
        hint = {"oom": "the model does not fit in the device's memory",
                "runtime-missing": "install onnxruntime (or ai-edge-litert / tflite-runtime) on the device"}.get(
            kind, "check the model on that machine")
        raise MeasurementError(f"measuring on {where} failed: {payload['error']}", hint)
    try:
        return Measurement.model_validate(payload)
    except ValidationError as exc:
        field, message = first_validation_error(exc)
        raise MeasurementError(f"the runner on {where} returned an invalid result ({field}: {message})",
                               "edgeopt and the runner versions may differ") from None


def map_op_names(measurement: Measurement, nodes: list[tuple[str, str, list[str], list[str]]]) -> None:
    """Tie onnxruntime's fused/renamed kernels back to the model's node names.

    ``nodes``: (name, op_type, inputs, outputs) in graph order. onnxruntime names kernels
    after the node ("conv1"), after the output tensor of a fused chain ("relu_1_nchwc":
    a Conv fused with the Relu that produces relu_1), with a prefix ("fused conv1") or
    with a fusion suffix ("MatMul_3/MatMulScaleFusion/"). A kernel named after a fused
    chain's output is charged to the node of its own op type up that chain.
    """
    by_name = {name: name for name, _, _, _ in nodes}
    by_output = {out: name for name, _, _, outputs in nodes for out in outputs}
    info = {name: (op_type, inputs) for name, op_type, inputs, _ in nodes}

    def up_chain(name: str, op_type: str | None) -> str:
        current = name
        for _ in range(3):  # Conv -> Add -> Relu is the longest chain onnxruntime fuses here
            if op_type is None or info[current][0] == op_type:
                return current
            first = next((i for i in info[current][1] if i in by_output), None)
            if first is None:
                break
            current = by_output[first]
        return name

    for op in measurement.per_op or []:
        raw = op.node
        candidates = [raw, raw.removeprefix("fused "), raw.split("/")[0]]
        for suffix in ("_nchwc", "_ReorderInput", "_ReorderOutput"):
            candidates += [c[: -len(suffix)] for c in candidates if c.endswith(suffix)]
        candidates += [re.sub(r"_token_\d+$", "", c) for c in candidates]
        for candidate in candidates:
            if candidate in by_name:
                # a fused kernel may carry its activation's name (TF exports name a node as its output): a Conv
                # kernel named after the Sigmoid it absorbed is the Conv's
                op.source_nodes = [up_chain(by_name[candidate], op.op_type)]
                break
            if candidate in by_output:
                op.source_nodes = [up_chain(by_output[candidate], op.op_type)]
                break


def measure_locally(model_path: Path, *, runs: int = 50, warmup: int = 5, threads: int = 1,
                    profile_ops: bool = True, inputs: Path | None = None, timeout_s: float = 600,
                    xnnpack: bool = True) -> Measurement:
    """Run the device runner here, in a child process with a clean memory baseline."""
    command = [sys.executable, str(RUNNER_PATH), str(model_path), "--runs", str(runs), "--warmup", str(warmup),
               "--threads", str(threads)]
    if inputs is not None:
        command += ["--inputs", str(inputs)]
    if not xnnpack:
        command.append("--no-xnnpack")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with temporary_folder("edgeopt-op-models-") as folder:
        if profile_ops:
            command.append("--profile")
            op_models = write_op_models(model_path, folder)
            if op_models is not None:
                command += ["--op-models", str(op_models)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise MeasurementError(f"measuring {model_path.name} took longer than {timeout_s:.0f} s",
                                   "lower --runs or check the model") from None
    if done.returncode not in (0, 3):
        raise MeasurementError(f"the measurement process died (exit {done.returncode}): "
                               f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}",
                               "the model may exhaust memory; rerun with --debug")
    return parse_runner_output(done.stdout, "this machine")


def write_op_models(model_path: Path, folder: Path) -> Path | None:
    """For a .tflite file: the bundle of single-op models the runner times op by op (formats/tflite_ops), written
    into ``folder``; None for other formats, or where it cannot be made (the file then has no per-op times)."""
    from edgeopt.formats.tflite import IDENTIFIER

    with open(model_path, "rb") as handle:
        if handle.read(8)[4:8] != IDENTIFIER:
            return None
    from edgeopt.formats.tflite_ops import op_models_bundle

    try:
        bundle = op_models_bundle(Path(model_path))
    except (ValueError, EdgeoptError):
        return None
    target = folder / "op_models.npz"
    target.write_bytes(bundle)
    return target


def check_runs(runs: int) -> None:
    if runs < 1:
        raise InputError("--runs must be at least 1", "e.g. --runs 50")
