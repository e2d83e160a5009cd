"""The contract between the pipeline and its stages.

A stage is an object with a ``name`` and two methods: ``applies(context)`` (does the run ask for it?)
and ``run(model, context) -> StageModel`` (the model it hands on, the same one when it only reports).
Everything a stage needs comes through ``StageContext``: the run's settings, the work folder, the
inputs plan and the source's reference outputs, the data, the device (with ``--ssh``), events, and
the facts earlier stages left for later ones (``context.facts``). Stages never import each other.

Adding a stage is one module with such an object plus its line in ``edgeopt.pipeline.STAGES``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from edgeopt.config.settings import ConvertConfig
from edgeopt.data import InputPlan, InputSpec
from edgeopt.errors import VerificationError
from edgeopt.events import Events
from edgeopt.formats.artifact import ModelArtifact, ModelFormat
from edgeopt.formats.onnx import default_opset, save_onnx
from edgeopt.stages.common.parity import ParityCheck, Tolerance, parity_check
from edgeopt.stages.common.records import StageRecord, utc_now

FINAL_MODEL = "model.onnx"
# Intermediate files, named after the stage that wrote them (published beside OUT/model.onnx).
STAGE_FILES = {"export": "export.onnx", "opset": "opset.onnx", "prune": "prune.onnx",
               "simplify": "simplify.onnx", "widen": "widen.onnx", "quantize": "quantize.onnx"}
# What `--format tflite` publishes beside OUT/model.onnx (a later run without it removes an older one).
TFLITE_MODEL = "model.tflite"


@dataclass
class StageModel:
    """The model handed from stage to stage: the graph, and the file a stage saved it to (None while only
    in memory, e.g. an ONNX source whose symbolic dims were freed)."""

    proto: onnx.ModelProto
    artifact: ModelArtifact | None = None


@dataclass
class Reference:
    """The source's outputs for each (seed, batch) sample, computed once. Samples come from the run's
    ``InputPlan``: resolved shapes, the data's value ranges, fills for integer inputs."""

    plan: InputPlan
    compute: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    order: list[str] | None = None  # input names in the order ``compute`` takes them (default: the plan's)
    cache: dict[tuple[int, int | None], tuple[dict[str, np.ndarray], list[np.ndarray]]] = field(default_factory=dict)

    @property
    def specs(self) -> list[InputSpec]:
        by_name = {s.name: s for s in self.plan.specs}
        return [by_name[n] for n in self.order] if self.order else self.plan.specs

    def sample(self, seed: int, batch: int | None) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        key = (seed, batch)
        if key not in self.cache:
            feeds = self.plan.sample(seed, batch)
            self.cache[key] = (feeds, self.compute(feeds))
        return self.cache[key]


class DeviceAccess(Protocol):
    """A device reached over SSH (``--ssh``), as the stages use it; the pipeline provides it."""

    name: str
    target: str | None

    def facts(self) -> dict[str, Any]:
        """The device's facts (``device``: machine, cpu_features, ...) and ``runtime``."""

    def latency(self, models: dict[str, bytes], feeds: dict[str, np.ndarray], events: Events) -> dict[str, Any]:
        """Float vs candidates timed side by side (stats by label, ratios to "float")."""

    def node_costs(self, model: bytes, label: str, feeds: dict[str, np.ndarray], events: Events) -> dict[str, float]:
        """Per-node kernel times of ``model`` on the device (µs)."""

    def measure(self, path: Path, feeds: dict[str, np.ndarray], events: Events) -> dict[str, Any]:
        """The runner's measurement of ``path`` as JSON, with the SSH transfer facts under "ssh"."""


@dataclass
class StageContext:
    config: ConvertConfig
    work_dir: Path
    events: Events
    records: list[StageRecord] = field(default_factory=list)
    produced: list[Path] = field(default_factory=list)  # files in the work folder, named as in OUT
    source: ModelArtifact | None = None
    source_path: Path | None = None
    source_format: ModelFormat | None = None
    plan: InputPlan | None = None
    reference: Reference | None = None
    device: DeviceAccess | None = None
    # facts a stage leaves for later ones and for the summary ("torch_source", "output_names",
    # "quantization_data", "unpruned", "prune_accuracy_set", "device_summary", "target_verdicts")
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def tolerance(self) -> Tolerance:
        parity = self.config.parity
        return Tolerance(parity.atol, parity.rtol, parity.min_cosine)

    def targets_dir(self) -> Path | None:
        return Path(self.config.targets_dir) if self.config.targets_dir else None

    def record(self, name: str) -> StageRecord | None:
        return next((r for r in self.records if r.name == name), None)

    def last_artifact(self) -> ModelArtifact | None:
        for record in reversed(self.records):
            if record.outputs:
                return record.outputs[-1]
        return self.source

    def parity_key(self) -> dict[str, Any]:
        """What a parity-checked stage's result depends on besides its input graph and own settings (its
        cache key): the tolerances and the sample inputs the reference is run on."""
        return {"parity": self.config.parity.model_dump(mode="json"),
                "plan": self.plan.summary() if self.plan else None,
                "reference": [s.describe() for s in self.reference.specs] if self.reference else None}

    @contextlib.contextmanager
    def stage(self, name: str, description: str) -> Iterator[StageRecord]:
        """The stage's record in the report, its cost measured (wall time, peak RSS), announced and closed as
        events."""
        events = self.events.scoped(name)
        events.started(description)
        record = StageRecord(name=name, status="ok", started_at=utc_now(), duration_s=0.0)
        self.records.append(record)
        try:
            with measure_cost(record):
                yield record
        finally:
            events.finished(record.status)

    def save(self, record: StageRecord, stage: str, model: onnx.ModelProto,
             parent: ModelArtifact | None = None) -> ModelArtifact:
        """Write ``model`` as the stage's intermediate file and add it to the record's outputs."""
        files = save_onnx(model, self.work_dir / STAGE_FILES[stage])
        self.produced.extend(files)
        artifact = ModelArtifact.from_file(files[0], ModelFormat.ONNX, opset=default_opset(model), produced_by=stage,
                                           external_files=files[1:], parent=parent or self.last_artifact())
        record.outputs.append(artifact)
        return artifact

    def final_files(self, model: onnx.ModelProto) -> list[Path]:
        """The final model saved once as the work folder's model.onnx (+ its data file), for stages that
        measure the file itself and for publication."""
        if "final_files" not in self.facts:
            # Shapes of intermediate tensors (value_info, which onnxslim fills in) are metadata runtimes infer
            # again; with a TensorFlow export's long names they made a 230 KB model 25% larger. Kept only
            # where a custom op produces the tensor (nothing can infer those).
            custom = {name for node in model.graph.node if node.domain not in ("", "ai.onnx", "com.microsoft")
                      for name in node.output}
            every = list(model.graph.value_info)
            del model.graph.value_info[:]
            model.graph.value_info.extend(info for info in every if info.name in custom)
            try:
                self.facts["final_files"] = save_onnx(model, self.work_dir / FINAL_MODEL)
            finally:
                del model.graph.value_info[:]
                model.graph.value_info.extend(every)
        return self.facts["final_files"]

    def forget(self, stage: str) -> None:
        """Drop a stage's intermediate files (its graph was rejected)."""
        name = STAGE_FILES[stage]
        for stale in (self.work_dir / name, self.work_dir / (name + ".data")):
            stale.unlink(missing_ok=True)
        self.produced = [p for p in self.produced if not p.name.startswith(name)]

    def save_checked(self, record: StageRecord, stage: str, model: onnx.ModelProto, reference: Reference,
                     parent: ModelArtifact | None = None) -> StageModel:
        """Save the stage's graph, then hold it against the source; a mismatch is fatal."""
        artifact = self.save(record, stage, model, parent)
        check = self.parity(Path(artifact.path), reference)
        record.parity.append(check)
        if not check.passed:
            worst = next(o for o in check.outputs if not o.passed)
            record.status = "failed"
            cosine = f", cosine {worst.cosine:.6f}" if worst.cosine is not None else ""
            how = worst.mismatch or (f"max abs diff {worst.max_abs_diff:.3g}{cosine}; allowed {check.atol:g} + "
                                     f"{check.rtol:g}·|ref|, cosine >= {check.min_cosine}")
            raise VerificationError(
                f"parity check failed after {stage}: output {worst.name!r} differs from the source ({how})",
                "the exported graph does not reproduce the model; rerun with --debug --keep-failed to inspect it, "
                "or loosen --parity-atol/--parity-rtol if the difference is expected",
            )
        return StageModel(model, artifact)

    def parity(self, model_path: Path, reference: Reference) -> ParityCheck:
        """``model_path`` against the source on ``parity.samples`` sample inputs, at two batch sizes
        when its batch axis is dynamic."""
        from edgeopt.errors import InputError
        from edgeopt.runtime.runner import open_runner

        runner = open_runner(model_path, label=f"the produced graph {model_path.name}")
        candidate_specs = runner.input_specs()
        dynamic_batch = all(spec.shape and not isinstance(spec.shape[0], int) for spec in candidate_specs
                            if spec.shape) and any(spec.shape for spec in candidate_specs)
        base = batch_of(reference.specs)
        batches = [base, base + 1] if dynamic_batch and base is not None else [None]
        samples, used = [], []
        settings = self.config.parity
        for index in range(settings.samples):
            batch = batches[index % len(batches)]
            feeds, expected = reference.sample(settings.seed + index, batch)
            missing = [s.name for s in candidate_specs if s.name not in feeds]
            if missing:
                raise VerificationError(f"the produced graph expects inputs the source lacks: {', '.join(missing)}",
                                        "this is an exporter bug; rerun with --debug")
            try:
                got = list(runner.run(cast_feeds({s.name: feeds[s.name] for s in candidate_specs}, runner)).values())
            except InputError as exc:
                if batch is None or batch == base:
                    raise
                raise VerificationError(
                    f"{model_path.name} declares a dynamic batch axis but fails at batch {batch}: {exc.message}",
                    "the model only works at its example batch size: rerun with --static-batch",
                ) from None
            samples.append((expected, got))
            used.append(batch if batch is not None else (base or 1))
        return parity_check(str(model_path.name), "source", samples, runner.output_names(), self.tolerance,
                            sorted(set(used)))


@contextlib.contextmanager
def measure_cost(record: StageRecord) -> Iterator[None]:
    """Wall time and peak RSS of the work inside the ``with``, written to ``record`` (also when it fails)."""
    from edgeopt.runtime.rss import COLLECT_AFTER_BYTES, peak_window, release_free_memory

    started = time.perf_counter()
    window = None
    try:
        with peak_window() as window:
            yield
    finally:
        record.duration_s = round(time.perf_counter() - started, 4)
        if window is not None:  # closed by now: its peak is read
            record.peak_rss_bytes, record.peak_rss_increase_bytes = window.peak_bytes, window.increase_bytes
            record.peak_rss_scope = window.scope
        # what the stage freed is not the next stage's floor
        release_free_memory(collect=window is not None and (window.increase_bytes or 0) > COLLECT_AFTER_BYTES)


def graph_input_shapes(model: onnx.ModelProto, specs: list[InputSpec]) -> dict[str, list[int]]:
    """The resolved shapes of the inputs ``model`` still has (onnxslim drops inputs nothing reads)."""
    present = {value.name for value in model.graph.input}
    return {s.name: [int(d) for d in s.shape] for s in specs if s.name in present}


class Stage(Protocol):
    name: str

    def applies(self, context: StageContext) -> bool:
        """Whether the run's settings ask for this stage."""

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        """The model to hand on (``model`` itself when the stage only measures or reports)."""


def batch_of(specs: list[InputSpec]) -> int | None:
    for spec in specs:
        if spec.shape:
            return int(spec.shape[0])
    return None


def cast_feeds(feeds: dict[str, np.ndarray], runner: Any) -> dict[str, np.ndarray]:
    """Feed each input in the dtype the graph declares (torch int64 vs ONNX int32, etc.)."""
    wanted = {s.name: s.dtype for s in runner.input_specs()}
    out = {}
    for name, value in feeds.items():
        dtype = wanted.get(name)
        if dtype and dtype not in ("bfloat16", "str") and value.dtype != np.dtype(dtype):
            value = value.astype(dtype)
        out[name] = value
    return out
