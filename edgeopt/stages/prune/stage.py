"""The prune stage of ``edgeopt convert``: a torch module (the source's, or the ONNX graph
converted) → pruned → fine-tuned → exported, with the per-step figures the report shows.

Accuracy at every step is measured on one labelled set: the fine-tuning validation split, else
the quantization eval data when it has labels; without labels, fidelity (mean output cosine to
the unpruned model on random inputs) stands in. ``pipeline.py`` calls ``run_prune_stage`` and
keeps the order; this module never decides what comes next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeopt.config.settings import FinetuneSettings, PruneConfig
from edgeopt.data import InputSpec, random_inputs
from edgeopt.data.dataset import Dataset
from edgeopt.data.specs import require_concrete
from edgeopt.errors import InputError
from edgeopt.events import Events
from edgeopt.stages.prune.details import PruneDetails
from edgeopt.stages.prune.finetuning import BatchLoader
from edgeopt.stages.prune.metrics import ModelFigures, flag_not_faster, onnx_figures


@dataclass
class EvalSet:
    """Labelled samples (``index``: those of ``dataset`` it holds; None: all), read batch by batch with the
    inputs in forward() order (``names``), for torch and onnxruntime alike."""

    dataset: Dataset
    names: list[str]
    source: str
    index: np.ndarray | None = None

    def loader(self, batch_size: int = 64) -> BatchLoader:
        return BatchLoader(self.dataset, self.names, batch_size, shuffle=False, index=self.index)


@dataclass
class PruneStageResult:
    onnx_path: Path  # the exported pruned (and fine-tuned) model
    module: Any  # the pruned torch module: the new reference for parity checks
    input_names: list[str]
    details: PruneDetails
    warnings: list[str] = field(default_factory=list)
    # the labelled samples every step's accuracy was measured on, as arrays (None: a hook's loaders)
    accuracy_set: EvalSet | None = None


def module_from_onnx(model: onnx.ModelProto, allow_unprunable: bool) -> tuple[Any, list[str], list[str], str | None]:
    """(module, input names, output names, why it was skipped) for an ONNX graph."""
    from edgeopt.stages.prune.onnx_convert import onnx_to_torch, unsupported_ops

    blocked = unsupported_ops(model)
    if blocked and allow_unprunable:
        op, name = blocked[0]
        return None, [], [], f"not pruned: op {op} (node {name!r}) cannot be converted to torch for pruning"
    converted = onnx_to_torch(model)  # raises naming the op when blocked
    return converted.module, converted.input_names, converted.output_names, None


def run_module(module: Any, specs: Sequence[InputSpec]) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """Feeds → the module's flattened outputs as arrays (the pruned model as a parity reference)."""

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        from edgeopt.formats.torch_onnx import to_torch_inputs
        from edgeopt.stages.prune.structured import flat_tensors

        with torch.inference_mode():
            outputs = module(*to_torch_inputs(list(specs), feeds))
        return [t.detach().cpu().numpy() for t in flat_tensors(outputs)]

    return run


def run_prune_stage(
    module: Any,
    unpruned_onnx: onnx.ModelProto,
    specs: Sequence[InputSpec],
    prune: PruneConfig | None,
    finetune: FinetuneSettings | None,
    *,
    targets: Sequence[Any],
    out_path: Path,
    opset: int | None,
    dynamic_batch: bool,
    output_names: list[str] | None,
    eval_set: EvalSet | None,
    events: Events | None = None,
    measure_latency: bool = True,
    latency_threads: int = 1,
    targets_dir: Path | None = None,
    timing_feeds: dict[str, np.ndarray] | None = None,
) -> PruneStageResult:
    """Prune ``module`` (the unpruned model whose ONNX form is ``unpruned_onnx``), fine-tune it when
    asked, export it to ``out_path`` and measure every step. ``prune`` None: fine-tuning only (steps
    "unpruned" and "fine-tuned"). ``specs`` are concrete (the run's resolved
    shapes); ``timing_feeds`` (default: random values at those shapes) time the steps."""
    import copy

    from edgeopt.formats.torch_onnx import to_torch_inputs

    note = (events or Events()).note
    from edgeopt.stages.prune.finetuning import evaluate, load_finetune_data
    from edgeopt.stages.prune.finetuning import finetune as run_finetune
    from edgeopt.stages.prune.structured import export_module, prune_module

    concrete = require_concrete(specs, "the prune stage")
    example = to_torch_inputs(concrete, random_inputs(concrete, seed=0))
    names = [s.name for s in specs]
    warnings: list[str] = []
    data = None
    if finetune is not None:
        data = load_finetune_data(finetune.data, specs, val=finetune.val, val_fraction=finetune.val_fraction,
                                  batch_size=finetune.batch_size, seed=finetune.seed)
    # Accuracy per step on held-out data when there is some (--eval with labels): the fine-tuning
    # validation split also decides early stopping, so its numbers flatter the fine-tuned step.
    if eval_set is not None:
        accuracy_set = eval_set
    elif data is not None and isinstance(data.val, BatchLoader):
        accuracy_set = EvalSet(data.val.dataset, data.val.names, f"{data.source} (validation split)", data.val.index)
    else:
        accuracy_set = None
    labelled = accuracy_set.loader() if accuracy_set is not None else (data.val if data is not None else None)
    labelled_source = accuracy_set.source if accuracy_set is not None else (data.source if data is not None else None)
    loss_fn = data.loss if data is not None else None

    def accuracy_of(model: Any) -> float | None:
        if labelled is None:
            return None
        return evaluate(model, labelled, loss=loss_fn)[1]

    original = copy.deepcopy(module).eval()
    unpruned_accuracy = accuracy_of(original)
    batches = None
    if prune is not None and prune.criterion == "taylor":
        if data is None:
            raise InputError("the taylor criterion ranks channels by gradients and needs labelled data",
                             "pass --finetune DATA, or use --prune-criterion magnitude")
        batches = [batch for _, batch in zip(range(4), data.train)]
    result = None
    if prune is not None:
        note("pruning channels")
        result = prune_module(module, example, prune, data_batches=batches, loss_fn=loss_fn)
        pruned = result.module
        warnings.extend(result.warnings)
    else:
        pruned = module
    pruned_accuracy = accuracy_of(pruned)
    finetuned = None
    if finetune is not None:
        note("fine-tuning")
        # distilling from the model before pruning; a model only trained has no other teacher than itself
        teacher = original if finetune.distill_weight > 0 and prune is not None else None
        finetuned = run_finetune(pruned, data.train, data.val, finetune.training(), teacher=teacher, loss=data.loss,
                                 events=events)
    note("exporting the pruned model")
    export_module(pruned, list(specs), out_path, opset=opset, dynamic_batch=dynamic_batch, output_names=output_names)
    pruned_onnx = onnx.load(str(out_path))
    shapes = {s.name: list(s.shape) for s in concrete}
    before = onnx_figures("unpruned", unpruned_onnx, targets, shapes, targets_dir)
    after = onnx_figures("pruned", pruned_onnx, targets, shapes, targets_dir)
    before.accuracy, after.accuracy = unpruned_accuracy, pruned_accuracy
    if labelled is None:
        before.fidelity, after.fidelity = 1.0, _fidelity(original, pruned, example)
    steps = [before, after] if prune is not None else [before]
    if finetuned is not None:
        tuned = after.model_copy(update={"step": "fine-tuned", "accuracy": accuracy_of(pruned)})
        if labelled is None:
            tuned.fidelity = _fidelity(original, pruned, example)
        steps.append(tuned)
    if measure_latency and prune is not None:  # fine-tuning alone keeps the architecture: nothing to time
        note("timing unpruned vs pruned on this machine")
        _host_latency(steps, {"unpruned": unpruned_onnx.SerializeToString(), "pruned": out_path},
                      timing_feeds or random_inputs(concrete, seed=1), latency_threads)
    flags = flag_not_faster(before, steps[-1]) if prune is not None else []  # nothing was meant to get faster
    warnings.extend(flags)
    details = PruneDetails(prune=result, finetune=finetuned, accuracy_data=labelled_source, steps=steps,
                           not_faster=flags)
    return PruneStageResult(out_path, pruned, names, details, warnings, accuracy_set)


def _fidelity(reference: Any, candidate: Any, example: tuple[Any, ...]) -> float:
    """Mean cosine between the outputs of two modules on the example inputs."""
    import torch

    from edgeopt.stages.prune.structured import flat_tensors

    with torch.inference_mode():
        ref = flat_tensors(reference(*example))
        got = flat_tensors(candidate(*example))
    cosines = []
    for a, b in zip(ref, got):
        a64, b64 = a.detach().double().flatten(), b.detach().double().flatten()
        denominator = float(a64.norm() * b64.norm())
        cosines.append(float(a64 @ b64) / denominator if denominator else 1.0)
    return float(np.mean(cosines)) if cosines else 1.0


def _host_latency(steps: list[ModelFigures], models: dict[str, bytes | Path], feeds: dict[str, np.ndarray],
                  threads: int) -> None:
    """Unpruned and pruned measured side by side here; every step after pruning shares the pruned time."""
    from edgeopt.runtime.latency import compare_latency

    stats = compare_latency(models, feeds, reference="unpruned", threads=threads, budget_s=4.0)
    for step in steps:
        label = "unpruned" if step.step == "unpruned" else "pruned"
        step.host_latency_ms = stats[label].median_ms
        step.host_latency_ratio = 1.0 if label == "unpruned" else stats[label].ratio_to_reference


def quantized_step(details: PruneDetails, final_onnx: onnx.ModelProto, unpruned_path: bytes | Path,
                   targets: Sequence[Any], specs: Sequence[InputSpec], eval_set: EvalSet | None,
                   threads: int = 1, targets_dir: Path | None = None,
                   timing_feeds: dict[str, np.ndarray] | None = None) -> list[str]:
    """Add the "quantized" row (the final int8 model) to the stage's details; returns new flags."""
    from edgeopt.runtime.latency import compare_latency

    concrete = require_concrete(specs, "the prune stage")
    shapes = {s.name: list(s.shape) for s in concrete}
    row = onnx_figures("quantized", final_onnx, targets, shapes, targets_dir)
    stats = compare_latency({"unpruned": unpruned_path, "quantized": final_onnx.SerializeToString()},
                            timing_feeds or random_inputs(concrete, seed=1), reference="unpruned", threads=threads,
                            budget_s=4.0)
    row.host_latency_ms = stats["quantized"].median_ms
    row.host_latency_ratio = stats["quantized"].ratio_to_reference
    if eval_set is not None:
        row.accuracy = _onnx_accuracy(final_onnx, eval_set, [s.name for s in specs])
    details.steps.append(row)
    flags = flag_not_faster(details.steps[0], row)
    details.not_faster = [*details.not_faster, *flags]
    return flags


def _onnx_accuracy(model: onnx.ModelProto, eval_set: EvalSet, names: list[str]) -> float | None:
    from edgeopt.runtime.runner import open_runner

    runner = open_runner(model.SerializeToString(), label="the quantized model")
    wanted = {s.name: s for s in runner.input_specs()}
    fixed_batch = any(isinstance(s.shape[0], int) and s.shape[0] > 0 for s in wanted.values() if s.shape)
    step = 1 if fixed_batch else 64
    correct = total = 0
    for arrays, labels in eval_set.loader(step).numpy_batches():
        logits = next(iter(runner.run(dict(zip(names, arrays))).values()))
        logits = np.asarray(logits).reshape(len(labels), -1)
        correct += int(np.sum(np.argmax(logits, axis=1) == labels))
        total += len(labels)
    return correct / total if total else None

