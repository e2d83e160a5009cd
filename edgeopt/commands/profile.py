"""`edgeopt profile`: static estimates per target, measurement on this machine, and
how the two compare."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeopt.analysis.comparison import EstimateVsMeasurement, OpTypeComparison, compare  # noqa: F401
from edgeopt.errors import InputError, first_validation_error
from edgeopt.events import Events
from edgeopt.formats.artifact import ModelArtifact, ModelFormat
from edgeopt.formats.onnx import load_onnx
from edgeopt.report.profile_schema import (  # noqa: F401 (the report's models, used by callers)
    PROFILE_SCHEMA_VERSION,
    DeviceOutputs,
    InputsUsed,
    ProfileReport,
)
from edgeopt.runtime.measure import Measurement, Upload
from edgeopt.fsutil import temporary_folder

def profile_model(
    path: Path,
    targets: list[str],
    *,
    input_shapes: dict[str | None, tuple[int, ...]] | None = None,
    dims: dict[str, int] | None = None,
    fills: dict[str, Any] | None = None,
    state_pairs: dict[str, str] | None = None,
    measure: bool = False,
    runs: int = 50,
    threads: list[int] | None = None,
    targets_dir: Path | None = None,
    ssh_hosts: list[str] | None = None,
    hosts_file: Path | None = None,
    max_parallel: int = 4,
    ssh_options: dict[str, Any] | None = None,
    inputs: Path | None = None,
    inputs_preprocess: str | None = None,
    max_input_samples: int = 8,
    xnnpack: bool = True,
    events: Events | None = None,
) -> ProfileReport:
    """Estimate per target, and measure here (``measure``) and on devices over SSH.

    Every symbolic dim is sized by data.resolve: ``input_shapes`` / ``dims``, then ``inputs``
    (calibration-data formats), then the model's metadata, a batch axis at 1. With ``inputs`` the
    outputs of its first ``max_input_samples`` samples are compared device vs this machine;
    ``fills`` give inputs the data lacks, ``state_pairs`` make the samples a stream. ``events`` hears
    what is happening; each device measured in parallel speaks on its own line (``device=``). ``xnnpack``
    False: a .tflite file is measured without the interpreter's XNNPACK delegate.
    """
    from edgeopt.graph.build import build_graph
    from edgeopt.runtime.host_calibration import host_for_estimates
    from edgeopt.targets import host_cpu_of, load_target

    events = events or Events()
    if max_input_samples < 1:
        raise InputError("the number of input samples must be at least 1", "e.g. --input-samples 8")
    from edgeopt.formats.sources import identify_source

    from edgeopt.formats.model_view import open_view

    source = identify_source(str(path), accepted=(ModelFormat.ONNX, ModelFormat.TFLITE), command="profile")
    view = open_view(path, source.format)
    fleet = load_hosts_file(hosts_file) if hosts_file is not None else []
    requested = list(targets)  # what a --ssh device (no target of its own) is compared with
    # each fleet device's target gets an estimate to compare with
    targets = list(dict.fromkeys([*targets, *(d.target for d in fleet if d.target)]))
    for name in targets:
        load_target(name, targets_dir)  # unknown targets fail before anything is read or run
    report = ProfileReport(model=ModelArtifact.from_file(path, view.format, external_files=view.external_files))
    plan, dataset = _plan_inputs(view, input_shapes, dims, fills, state_pairs, inputs, inputs_preprocess)
    report.input_shapes = plan.resolved.shapes
    report.resolved_inputs = plan.summary()
    report.warnings.extend(plan.warnings)
    priced = _Estimates(xnnpack=xnnpack)
    for name in targets:
        target = host_for_estimates(load_target(name, targets_dir), events)
        events.note(f"estimating for {name}")
        graph = build_graph(view.model, report.input_shapes, format=view.format, input_values=plan.known_values())
        priced.add(name, graph, target, host_cpu_of(target, targets_dir))
        # one asked thread count prices the estimate at it; otherwise at all cores, as deployed
        report.estimates[name] = priced.at(name, threads[0] if threads and len(threads) == 1 else None)
    with temporary_folder("edgeopt-profile-") as tmp:
        samples_file, report.inputs = _write_samples(plan, dataset, max_input_samples, Path(tmp))
        runnable = _runnable_copy(path, view, Path(tmp))
        if not xnnpack:  # (a runner option, passed to the device runner with the SSH ones)
            ssh_options = {**(ssh_options or {}), "xnnpack": False}
        _measure_all(report, runnable, view, measure, runs, threads, ssh_hosts, fleet, max_parallel,
                     ssh_options, samples_file, dataset is not None, plan.state_pairs, events, requested, priced)
    return report


class _Estimates:
    """Each target's static estimate priced at any thread count (a measurement is compared with the estimate
    at its own count), the graph built once per target."""

    def __init__(self, xnnpack: bool = True) -> None:
        self.xnnpack = xnnpack  # .tflite: memory as the interpreter allocates it with XNNPACK or without
        self._inputs: dict[str, tuple[Any, Any, Any]] = {}
        self._priced: dict[tuple[str, int | None], Any] = {}

    def add(self, name: str, graph: Any, target: Any, cpu_target: Any) -> None:
        self._inputs[name] = (graph, target, cpu_target)

    def at(self, name: str, threads: int | None) -> Any:
        from edgeopt.analysis.profile import static_profile

        if name not in self._inputs:
            return None
        if (name, threads) not in self._priced:
            graph, target, cpu_target = self._inputs[name]
            self._priced[name, threads] = static_profile(graph, target, cpu_target=cpu_target, threads=threads,
                                                         xnnpack=self.xnnpack)
        return self._priced[name, threads]


def _plan_inputs(view: Any, input_shapes: dict[str | None, tuple[int, ...]] | None, dims: dict[str, int] | None,
                 fills: dict[str, Any] | None, state_pairs: dict[str, str] | None, inputs: Path | None,
                 preprocess: str | None) -> tuple[Any, Any]:
    """(InputPlan, the --inputs Dataset or None): the model's inputs sized and valued (data.resolve)."""
    from edgeopt.data import (
        ImagePreprocessing,
        InputPlan,
        apply_user_shapes,
        check_state_pairs,
        fill_plan,
        load_dataset,
        metadata_dict,
        parse_fills,
        resolve_inputs,
    )

    declared = view.specs
    dataset = None
    if inputs is not None:
        loading = apply_user_shapes(declared, input_shapes, dims, keep_batch_free=True)
        dataset = load_dataset(inputs, loading, preprocessing=ImagePreprocessing.parse(preprocess) if preprocess
                               else None, optional=[s.name for s in declared])
    resolved = resolve_inputs(declared, shapes=input_shapes, dims=dims, data=[dataset],
                              metadata=metadata_dict(list(view.metadata.items())))
    chosen, warnings = fill_plan(declared, resolved, [dataset], parse_fills(dict(fills or {})))
    plan = InputPlan(resolved, chosen, state_pairs=dict(state_pairs or {}), warnings=warnings)
    if plan.state_pairs:
        check_state_pairs(plan.state_pairs, plan.specs, view.output_names)
    plan.learn_values(dataset)
    return plan, (plan.with_fills(dataset) if dataset is not None else None)


def _runnable_copy(path: Path, view: Any, folder: Path) -> Path:
    """``path`` itself, unless its inputs have 0-sized dims (an exporter's "any size" that onnxruntime
    enforces literally): then a copy with those dims freed, in ``folder``."""
    from edgeopt.formats.onnx import free_input_dims

    if view.format is ModelFormat.TFLITE:  # the runner picks the interpreter by the suffix
        if path.suffix.lower() == ".tflite":
            return path
        link = folder / f"{path.name}.tflite"
        link.symlink_to(path.resolve())
        return link
    model = view.model
    if not any(d.HasField("dim_value") and d.dim_value == 0 for v in model.graph.input
               if v.type.HasField("tensor_type") for d in v.type.tensor_type.shape.dim):
        return path
    full = load_onnx(path, check=False).model  # checked when its view was opened
    freed, _ = free_input_dims(full)
    copy = folder / path.name
    copy.write_bytes(freed.SerializeToString())
    return copy


def _measure_all(report: ProfileReport, path: Path, view: Any, measure: bool, runs: int,
                 threads: list[int] | None, ssh_hosts: list[str] | None, fleet: list["Device"], max_parallel: int,
                 ssh_options: dict[str, Any] | None, samples_file: Path, compare_outputs: bool,
                 state_pairs: dict[str, str], events: Events, requested_targets: list[str],
                 priced: _Estimates) -> None:
    if measure:
        report.measurements["host"] = _measure_host(path, view, runs, threads, events, samples_file,
                                                    xnnpack=(ssh_options or {}).get("xnnpack", True))
        if "host" in report.estimates:
            for measurement in report.measurements["host"]:
                comparison = compare(priced.at("host", measurement.threads), measurement)
                if comparison:
                    report.comparisons.append(comparison)
        if "host" in report.estimates and not report.comparisons:
            report.warnings.append("no estimate to compare with: calibrate the host first "
                                   "(edgeopt targets calibrate host)")
    devices = [Device.model_construct(name=host, ssh=host, target=None) for host in ssh_hosts or []] + fleet
    if devices:
        # --ssh devices have no target of their own: compare them with the requested ones
        compare_with = {host: requested_targets for host in ssh_hosts or []}
        _measure_devices(report, path, view, devices, runs, threads, ssh_options or {}, events, max_parallel,
                         samples_file, compare_with, compare_outputs, state_pairs, priced)


def _write_samples(plan: Any, dataset: Any, max_samples: int, folder: Path) -> tuple[Path, InputsUsed]:
    """The runner's ``s<i>/<input>`` .npz: the first ``max_samples`` model runs' feeds of the data, or one
    sample made by the plan (resolved shapes, fills) when there is no data. Devices never guess."""
    arrays: dict[str, np.ndarray] = {}
    if dataset is None:
        arrays = {f"s0/{name}": np.array(value, copy=True) for name, value in plan.sample(0).items()}
        described = InputsUsed(source="random values at the resolved shapes", samples_used=1)
    else:
        count = 0
        for index, feeds in enumerate(dataset.batches(1)):
            if index >= max_samples:
                break
            arrays.update({f"s{index}/{name}": np.array(value, copy=True) for name, value in feeds.items()})
            count += 1
        described = InputsUsed(source=dataset.source, sha256=dataset.sha256, samples_used=count,
                               samples_available=dataset.count, layouts=dataset.describe_layouts())
    target = folder / "inputs.npz"
    np.savez(target, **arrays)
    return target, described


def host_reference_outputs(path: Path, samples_file: Path,
                           state_pairs: dict[str, str] | None = None) -> list[dict[str, np.ndarray]]:
    """This machine's outputs for every sample (a stream carries its state), to hold the devices' against."""
    from edgeopt.data import run_stream
    from edgeopt.runtime.device_runner import load_samples
    from edgeopt.formats.registry import sniff_format
    from edgeopt.runtime.runner import open_runner

    runner = open_runner(path, label=str(path), format=sniff_format(path))
    return [dict(outputs) for _fed, outputs in run_stream(runner.run, load_samples(np, samples_file),
                                                           state_pairs or {})]


def compare_device_outputs(reference: list[dict[str, np.ndarray]],
                           device: list[dict[str, np.ndarray]]) -> DeviceOutputs:
    """Per output: cosine (per sample and worst channel), SQNR, max error, top-1 / exact agreement."""
    from edgeopt.metrics.fidelity import compare_outputs

    if len(reference) != len(device):
        raise ValueError(f"{len(device)} samples of outputs from the device, {len(reference)} here")
    outputs = []
    for name in reference[0]:
        if any(name not in sample for sample in device):
            raise ValueError(f"the device returned no output {name!r}")
        ref = _join([np.asarray(sample[name]) for sample in reference])
        dev = _join([np.asarray(sample[name]) for sample in device])
        outputs.append(compare_outputs(name, ref, dev if dev is not None else np.empty(0)))
    worst = min((o.exact_agreement if o.exact_agreement is not None else
                 min(o.cosine_mean, o.channel_cosine_min if o.channel_cosine_min is not None else 1.0))
                for o in outputs) if outputs else 1.0
    return DeviceOutputs(samples=len(reference), outputs=outputs, worst_cosine=worst)


def _join(parts: list[np.ndarray]) -> np.ndarray | None:
    """Samples' outputs as one array: along the batch axis when there is one, else stacked."""
    if all(p.ndim >= 1 for p in parts) and len({p.shape[1:] for p in parts}) == 1:
        return np.concatenate(parts)
    if len({p.shape for p in parts}) == 1:
        return np.stack(parts)
    return None


# Same model, same runtime family: outputs should agree to float rounding. Below this, the
# device's kernels (e.g. ARM int8 paths) change results enough to check its accuracy there.
DEVICE_AGREEMENT_FLOOR = 0.999


class Device(BaseModel):
    """One entry of a --hosts file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")
    ssh: str
    target: str | None = None  # target profile to compare this device's measurement with
    python: str | None = Field(None, min_length=1)  # its Python (a venv's), instead of --remote-python


def load_hosts_file(path: Path) -> list[Device]:
    """``[[device]]`` tables with name, ssh and an optional target; errors name the entry and field."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from pydantic import ValidationError

    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"hosts file not found: {path}", "check the --hosts path") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: cannot read the hosts file: {exc}", "it must be TOML with [[device]] tables") from None
    unknown = set(raw) - {"device"}
    if unknown or not isinstance(raw.get("device"), list) or not raw["device"]:
        raise InputError(f"{path}: expected [[device]] tables only (found {sorted(raw) or 'nothing'})",
                         'e.g. [[device]] name = "pi4-a"  ssh = "pi@10.0.0.5"  target = "rpi4b"')
    devices = []
    for index, entry in enumerate(raw["device"], start=1):
        try:
            devices.append(Device.model_validate(entry))
        except ValidationError as exc:
            field, message = first_validation_error(exc, "(entry)")
            raise InputError(f"{path}: device #{index}, field {field!r}: {message}",
                             "each [[device]] has name, ssh and optionally target and python") from None
    names = [d.name for d in devices]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}: device names must be unique ({', '.join(duplicates)})", "rename the duplicates")
    return devices


def _measure_devices(report: ProfileReport, path: Path, view: Any, devices: list[Device], runs: int,
                     threads: list[int] | None, ssh_options: dict[str, Any], events: Events,
                     max_parallel: int = 4, samples_file: Path | None = None,
                     compare_with: dict[str, list[str]] | None = None, compare_outputs: bool = False,
                     state_pairs: dict[str, str] | None = None, priced: _Estimates | None = None) -> None:
    """Measure on every device, ``max_parallel`` at a time; a device that fails is reported
    and does not lose the others' results (exit 3 only when all fail). Each device's runs are
    compared with its own target (--hosts), or with the targets ``compare_with`` names for it."""
    from concurrent.futures import ThreadPoolExecutor

    from edgeopt.errors import EdgeoptError, RemoteError
    from edgeopt.remote.device import profile_over_ssh
    from edgeopt.runtime.measure import map_op_names

    names = view.nodes

    reference = host_reference_outputs(path, samples_file, state_pairs) \
        if samples_file is not None and compare_outputs else None

    def tell(device: Device, message: str) -> None:
        events.scoped(device=device.name).note(message)

    def measure(device: Device) -> list[dict[str, Any]]:
        results = []
        for count in threads or [1]:
            run = profile_over_ssh(device.ssh, path, runs=runs, threads=count, inputs=samples_file,
                                   emit_outputs=reference is not None and not results, state_pairs=state_pairs,
                                   events=events.scoped(device=device.name),
                                   **{**ssh_options, **({"python": device.python} if device.python else {})})
            map_op_names(run.measurement, names)
            if reference is not None and not results:
                report.device_fidelity[device.name] = _device_fidelity(device.name, reference, run.measurement)
            results.append(run.measurement.model_copy(update={"outputs": None, "ssh": Upload(
                host=device.ssh, uploaded_bytes=run.uploaded_bytes, model_cached=run.model_cached)}))
        p50 = results[-1].latency_ms.p50
        tell(device, f"done: p50 {p50:.3f} ms")
        return results

    failures: list[str] = []
    refused: list[InputError] = []  # the model's fault (an op the runtime lacks), not the device's
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(devices)))) as pool:
        futures = {device.name: pool.submit(measure, device) for device in devices}
        for device in devices:
            try:
                report.measurements[device.name] = futures[device.name].result()
            except EdgeoptError as exc:
                if isinstance(exc, InputError):
                    refused.append(exc)
                failures.append(f"{device.name}: {exc}")
                report.warnings.append(f"measuring on {device.name} failed: {exc}")
                tell(device, f"FAILED: {exc.message}")
    for name, fidelity in report.device_fidelity.items():
        worst = fidelity.worst_output
        if fidelity.worst_cosine is not None and fidelity.worst_cosine < DEVICE_AGREEMENT_FLOOR and worst:
            report.warnings.append(f"outputs on {name} differ from this machine's on the same inputs: worst "
                                   f"agreement {fidelity.worst_cosine:.4f} (output {worst.name!r}); "
                                   f"check accuracy on the device itself")
    for device in devices:
        for target in [device.target] if device.target else (compare_with or {}).get(device.name, []):
            if target not in report.estimates:
                continue
            for measurement in report.measurements.get(device.name, []):
                estimate = priced.at(target, measurement.threads) if priced else report.estimates[target]
                comparison = compare(estimate, measurement)
                if comparison:
                    report.comparisons.append(comparison.model_copy(update={"device": device.name}))
    if refused and len(refused) == len(devices):
        raise refused[0]
    if failures and len(failures) == len(devices):
        raise RemoteError(f"every device failed: {'; '.join(failures)}", "check the hosts with ssh HOST true")


def _device_fidelity(name: str, reference: list[dict[str, np.ndarray]], measurement: Any) -> DeviceOutputs:
    from edgeopt.errors import RemoteError

    if measurement.outputs and measurement.outputs.get("skipped"):
        return DeviceOutputs(samples=len(reference), skipped=measurement.outputs["skipped"])
    try:
        device_outputs = measurement.outputs_arrays()
        if device_outputs is None:
            raise ValueError("no outputs in the result")
        return compare_device_outputs(reference, device_outputs)
    except (ValueError, KeyError, OSError) as exc:
        raise RemoteError(f"the outputs returned by {name} cannot be compared: {exc}",
                          "edgeopt and the device runner may differ; rerun with --debug") from None


def _measure_host(path: Path, view: Any, runs: int, threads: list[int] | None, events: Events,
                  samples_file: Path, xnnpack: bool = True) -> list[Measurement]:
    from edgeopt.runtime.measure import check_runs, map_op_names, measure_locally

    check_runs(runs)
    thread_counts = threads or sorted({1, os.cpu_count() or 1})
    names = view.nodes
    results = []
    for count in thread_counts:
        events.note(f"measuring on this machine, {count} thread(s)")
        measurement = measure_locally(path, runs=runs, threads=count, inputs=samples_file, xnnpack=xnnpack)
        map_op_names(measurement, names)
        results.append(measurement.model_copy(update={"outputs": None}))
    return results
