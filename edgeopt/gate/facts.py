"""The numbers a budget is held against, gathered without re-running anything: the artifact itself
(sizes, parameters, MACs, static estimates per target, analysed lazily), the convert report that
describes it (same sha256: accuracy, fidelity, device measurements) and `edgeopt profile -o` reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edgeopt.config.settings import Budget
from edgeopt.formats.artifact import ModelFormat
from edgeopt.errors import EdgeoptError, InputError
from edgeopt.report.profile_schema import ProfileReport
from edgeopt.report.schema import Report
from edgeopt.gate.checks import Fact
from edgeopt.stages.profile import TargetVerdict

TOP_CONTRIBUTORS = 8


# -- artifacts ----------------------------------------------------------------------------------------

@dataclass
class ArtifactFacts:
    """One model file a budget names, analysed lazily (each analysis at most once)."""

    path: Path
    targets_dir: Path | None = None
    # the project's [pipeline] input_shapes ("" for the only input) and dims: how its inputs are sized
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    _estimates: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def view(self):
        """The file as the reporting commands see it (formats/model_view.py): ONNX or TFLite."""
        from edgeopt.formats.model_view import open_view
        from edgeopt.formats.sources import identify_source

        source = identify_source(str(self.path), accepted=(ModelFormat.ONNX, ModelFormat.TFLITE), command="gate")
        return open_view(self.path, source.format)

    @cached_property
    def files(self) -> list[Path]:
        return [self.path, *self.view.external_files]

    @cached_property
    def sha256(self) -> str:
        from edgeopt.fsutil import sha256_file

        return sha256_file(self.path)

    @cached_property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    @cached_property
    def compressed_size(self) -> int:
        from edgeopt.fsutil import gzip_size

        return gzip_size(self.files)

    @cached_property
    def summary(self):
        """Parameter and MAC counts (``parameter_count``, ``macs_total``)."""
        if self.view.format is ModelFormat.TFLITE:
            from types import SimpleNamespace

            from edgeopt.analysis.tflite_summary import summarize_tflite

            found = summarize_tflite(self.view.model)
            return SimpleNamespace(parameter_count=found["parameter_count"], macs_total=found["macs_total"])
        from edgeopt.analysis.summary import summarize_graph

        return summarize_graph(self.view.model)

    def estimate(self, target_name: str):
        """The static profile on ``target_name`` (None with the reason when it cannot be made)."""
        if target_name not in self._estimates:
            from edgeopt.analysis.profile import static_profile
            from edgeopt.runtime.host_calibration import host_for_estimates
            from edgeopt.targets import host_cpu_of, load_target

            target = host_for_estimates(load_target(target_name, self.targets_dir))
            cpu = host_cpu_of(target, self.targets_dir)
            try:
                from edgeopt.graph.build import build_graph

                graph = build_graph(self.view.model, self.resolved_input_shapes, format=self.view.format)
                self._estimates[target_name] = (static_profile(graph, target, cpu_target=cpu), None)
            except EdgeoptError as exc:
                self._estimates[target_name] = (None, exc.message)
        return self._estimates[target_name]

    @cached_property
    def resolved_input_shapes(self) -> dict[str, list[int]]:
        """The inputs' shapes as `profile` and `convert` size them: the project's [pipeline] shapes and dims,
        then the model's metadata, a free batch axis at 1; a dim nothing sizes raises the one-line InputError
        that names the setting (the estimate is then unavailable with that reason, never priced at 1)."""
        from edgeopt.data import metadata_dict, resolve_inputs

        shapes = {(name or None): tuple(dims) for name, dims in self.input_shapes.items()}
        try:
            return resolve_inputs(self.view.specs, shapes=shapes, dims=self.dims,
                                  metadata=metadata_dict(list(self.view.metadata.items()))).shapes
        except InputError as exc:
            raise InputError(f"{exc.message}; size it in edgeopt.toml's [pipeline] dims (e.g. dims = "
                             "{ width = 320 }) or input_shapes", exc.hint) from None

    def top_initializers(self, count: int) -> list[dict[str, Any]]:
        from edgeopt.graph.onnx_protos import tensor_bytes
        from edgeopt.formats.onnx import iter_model_tensors

        if self.view.format is ModelFormat.TFLITE:
            stored = [t for t in self.view.model.main.tensors if t.buffer_bytes]
            return [{"name": t.name, "bytes": t.buffer_bytes}
                    for t in sorted(stored, key=lambda t: -t.buffer_bytes)[:count]]
        sizes = sorted(((tensor_bytes(t), t.name) for t in iter_model_tensors(self.view.model)), reverse=True)
        return [{"name": name, "bytes": size} for size, name in sizes[:count]]


# -- reports --------------------------------------------------------------------------------------------

def read_json_object(path: Path, what: str) -> dict[str, Any]:
    from edgeopt.fsutil import read_json

    data = read_json(Path(path), what, "check the path, or regenerate it")
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a {what} (expected a JSON object)", "regenerate it")
    return data


def estimated_memory_fact(verdict: TargetVerdict, target: str) -> Fact | None:
    """The estimated peak memory on ``target``: the runtime's peak RSS increase (comparable with a measured
    one: onnxruntime's, or the TFLite interpreter's for .tflite files), or weights + peak activations where the
    runtime is not modelled (MCUs); None if unknown."""
    if verdict.peak_memory_bytes is not None:
        return Fact(value=verdict.peak_memory_bytes, kind="estimated", error=verdict.memory_error,
                    source=f"estimate for {target} (runtime peak RSS increase)")
    if verdict.weight_bytes is not None and verdict.peak_activation_bytes is not None:
        return Fact(value=verdict.weight_bytes + verdict.peak_activation_bytes, kind="estimated",
                    source=f"estimate for {target} (weights + peak activations)")
    return None


def report_facts(report: Report, budget: Budget) -> dict[str, Fact]:
    """What a convert report says about its final model, for ``budget`` (also a baseline's numbers)."""
    facts: dict[str, Fact] = {}
    summary, final = report.summary, report.final
    src = "report"
    if final is not None and final.size_bytes is not None:  # the artifact's size counts its external data already
        facts["size"] = Fact(value=final.size_bytes, source=src)
    for metric, value in (("compressed_size", summary.gzip_size_bytes), ("params", summary.parameter_count),
                          ("macs", summary.macs_total)):
        if value is not None:
            facts[metric] = Fact(value=value, source=src)
    target = budget.target
    if target is not None:
        verdict_ = summary.targets.get(target)
        if verdict_ is not None:
            if verdict_.latency_ms is not None:
                facts["latency_ms@estimated"] = Fact(value=verdict_.latency_ms, source=f"estimate for {target}",
                                                     kind="estimated", error=verdict_.latency_error)
            else:
                facts["latency_ms@estimated"] = Fact(value=None, kind="estimated",
                                                     missing_reason=f"no latency estimate for {target}: "
                                                                    f"{verdict_.estimate_unavailable_reason}")
            memory = estimated_memory_fact(verdict_, target)
            if memory is not None:
                facts["peak_memory@estimated"] = memory
        device = summary.device
        if device is not None and device.target == target:
            facts["latency_ms@measured"] = Fact(value=device.p50_ms, source=f"measured on {device.host} (p50)",
                                                kind="measured")
            facts["peak_memory@measured"] = Fact(value=device.peak_rss_increase_bytes, kind="measured",
                                                 source=f"measured on {device.host} (peak RSS increase)")
    quantization = summary.quantization
    stage = report.stage("quantize")
    float_accuracy = quantization.accuracy_float
    if float_accuracy is None and stage is not None:
        float_accuracy = next((c.fidelity.accuracy_reference for c in getattr(stage.details, "candidates", [])
                               if c.fidelity and c.fidelity.accuracy_reference is not None), None)
    shipped_int8 = quantization.shipped == "int8"
    shipped_accuracy = quantization.accuracy_int8 if shipped_int8 else float_accuracy
    no_accuracy = ("the report has no accuracy: convert with --eval DATA that has a 'labels' array"
                   if stage is not None else "the report has no accuracy: convert with --calib and --eval DATA "
                                             "(with labels)")
    facts["accuracy"] = Fact(value=shipped_accuracy, source=src, missing_reason=None if shipped_accuracy is not None
                             else no_accuracy)
    drop = (float_accuracy - shipped_accuracy) if float_accuracy is not None and shipped_accuracy is not None else None
    drop_source = src
    steps = summary.pruning.steps if summary.pruning is not None else []
    if steps and steps[0].accuracy is not None and steps[-1].accuracy is not None:
        # pruning changed the float model itself: the drop that matters is from the unpruned one,
        # measured on one labelled set across the steps
        drop = steps[0].accuracy - steps[-1].accuracy
        drop_source = f"report (unpruned → {steps[-1].step}, pruning steps)"
    facts["accuracy_drop"] = Fact(value=drop, source=drop_source,
                                  missing_reason=None if drop is not None else no_accuracy)
    if shipped_int8:
        cosine = quantization.worst_cosine
        facts["fidelity"] = Fact(value=cosine, source="report (int8 vs float, worst output)",
                                 missing_reason=None if cosine is not None else "the report has no fidelity figure")
    else:
        parity = summary.parity.min_cosine if summary.parity is not None else None
        facts["fidelity"] = Fact(value=parity if parity is not None else 1.0,
                                 source="report (float model: parity with the source)")
    if steps:
        fidelities = [s.fidelity for s in steps[1:] if s.fidelity is not None]
        if fidelities and facts["fidelity"].value is not None:  # no labels: agreement with the unpruned model
            facts["fidelity"] = Fact(value=min(facts["fidelity"].value, fidelities[-1]),
                                     source="report (agreement with the unpruned model)")
    return facts


def profile_facts(profile: ProfileReport, target: str) -> dict[str, Fact]:
    """Measurements in an `edgeopt profile` report for ``target``: this machine for "host", and
    devices whose comparison names the target."""
    devices = {"host"} if target == "host" else set()
    devices |= {c.device for c in profile.comparisons if c.target == target}
    for device in sorted(devices):
        runs = profile.measurements.get(device) or []
        if runs:
            run = min(runs, key=lambda m: m.threads)  # 1 thread unless only more were measured
            return {"latency_ms@measured": Fact(value=run.latency_ms.p50, kind="measured",
                                                source=f"measured on {device} (p50, {run.threads} thread(s))"),
                    "peak_memory@measured": Fact(value=run.memory.peak_rss_increase_bytes, kind="measured",
                                                 source=f"measured on {device} (peak RSS increase)")}
    return {}


def facts_for(budget: Budget, artifact: ArtifactFacts, report: Report | None, report_path: Path | None,
           profiles: list[ProfileReport]) -> tuple[dict[str, Fact], dict[str, Fact]]:
    """(facts for the budget's metrics, every metric known — for the baseline document)."""
    facts: dict[str, Fact] = {"size": Fact(value=artifact.size, source="file"),
                              "compressed_size": Fact(value=artifact.compressed_size, source="file (gzip -6)")}
    from_report = report_facts(report, budget) if report is not None else {}
    for metric, count in (("params", lambda s: s.parameter_count), ("macs", lambda s: s.macs_total)):
        if metric in from_report:
            facts[metric] = from_report[metric]
        else:
            try:
                facts[metric] = Fact(value=count(artifact.summary), source="static analysis")
            except EdgeoptError as exc:
                facts[metric] = Fact(value=None, missing_reason=exc.message)
    if budget.target is not None:
        estimate, reason = (None, None)
        stale = from_report.get("latency_ms@estimated")
        if stale is not None and stale.value is None:  # the run had no estimate (an uncalibrated host): try now
            del from_report["latency_ms@estimated"]
        if "latency_ms@estimated" not in from_report or "peak_memory@estimated" not in from_report:
            estimate, reason = artifact.estimate(budget.target)
        if "latency_ms@estimated" not in from_report:
            from_report["latency_ms@estimated"] = Fact(
                value=estimate.latency_ms if estimate else None, source=f"estimate for {budget.target}",
                missing_reason=(estimate.estimate_unavailable_reason if estimate else reason), kind="estimated",
                error=estimate.latency_error if estimate else None)
        if "peak_memory@estimated" not in from_report and estimate is not None:
            memory = estimated_memory_fact(TargetVerdict.of(estimate), budget.target)
            if memory is not None:
                from_report["peak_memory@estimated"] = memory
        if "latency_ms@measured" not in from_report:
            for profile in profiles:
                if profile.model.sha256 == artifact.sha256:
                    found = profile_facts(profile, budget.target)
                    if found:
                        from_report.update(found)
                        break
    if report is None:
        why = ("no convert report to read it from (pass --report OUT/report.json)" if report_path is None else
               f"{report_path} describes another model (its final sha256 differs from {artifact.path.name}'s)")
        for metric in ("accuracy", "accuracy_drop", "fidelity"):
            from_report.setdefault(metric, Fact(value=None, missing_reason=why))
    facts.update(_choose(budget, from_report, ("size", "compressed_size")))
    return facts, facts | {k: v for k, v in from_report.items() if "@" in k}


def _choose(budget: Budget, found: dict[str, Fact], skip: tuple[str, ...] = ()) -> dict[str, Fact]:
    """Pick estimated or measured latency / peak memory per ``budget.source``; pass the rest through."""
    chosen = {k: v for k, v in found.items() if "@" not in k and k not in skip}
    for metric in ("latency_ms", "peak_memory"):
        measured, estimated = found.get(f"{metric}@measured"), found.get(f"{metric}@estimated")
        if budget.source == "measured":
            chosen[metric] = measured or Fact(value=None, missing_reason=(
                f"no measurement on {budget.target}: run `edgeopt convert --ssh HOST` or `edgeopt profile --ssh HOST "
                f"-o FILE` and list FILE in [gate] profile_reports"))
        elif budget.source == "estimated":
            chosen[metric] = estimated or Fact(value=None, missing_reason=f"no estimate for {budget.target}")
        else:
            chosen[metric] = measured if measured is not None and measured.value is not None else (
                estimated or Fact(value=None, missing_reason=f"no estimate or measurement for {budget.target}"))
    return chosen


def contributors_of(budget: Budget, artifact: ArtifactFacts, baseline: dict[str, Any] | None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(for the Markdown: top initializers / nodes with growth vs the baseline's, for the baseline file)."""
    try:
        initializers = artifact.top_initializers(TOP_CONTRIBUTORS * 4)
    except EdgeoptError:
        initializers = []
    nodes: list[dict[str, Any]] = []
    if budget.target is not None:
        estimate, _reason = artifact.estimate(budget.target)
        if estimate is not None:
            timed = sorted((n for n in estimate.nodes if n.time_us), key=lambda n: -n.time_us)
            nodes = [{"name": n.name, "op_type": n.op_type, "time_us": round(n.time_us, 3)}
                     for n in timed[:TOP_CONTRIBUTORS * 4]]
    stored = {"target": budget.target, "initializers": initializers, "nodes": nodes}
    if baseline is None:
        shown = {"target": budget.target, "initializers": initializers[:TOP_CONTRIBUTORS],
                 "nodes": nodes[:TOP_CONTRIBUTORS]}
        return shown, stored
    old_init = {i["name"]: i["bytes"] for i in baseline.get("initializers", [])}
    old_nodes = {n["name"]: n["time_us"] for n in baseline.get("nodes", [])}
    for item in initializers:
        if item["name"] in old_init:
            item_delta = item["bytes"] - old_init[item["name"]]
            item.update(delta_bytes=item_delta)
        else:
            item.update(new=True)
    for item in nodes:
        if item["name"] in old_nodes:
            item.update(delta_us=round(item["time_us"] - old_nodes[item["name"]], 3))
        else:
            item.update(new=True)
    grew_init = sorted(initializers, key=lambda i: -(i.get("delta_bytes") or (i["bytes"] if i.get("new") else 0)))
    grew_nodes = sorted(nodes, key=lambda n: -(n.get("delta_us") or (n["time_us"] if n.get("new") else 0)))
    shown = {"target": budget.target, "initializers": grew_init[:TOP_CONTRIBUTORS],
             "nodes": grew_nodes[:TOP_CONTRIBUTORS]}
    stored = {"target": budget.target, "initializers": [{"name": i["name"], "bytes": i["bytes"]} for i in initializers],
              "nodes": [{k: n[k] for k in ("name", "op_type", "time_us")} for n in nodes]}
    return shown, stored
