"""Structured (channel) pruning of PyTorch modules with Torch-Pruning's dependency graph.

``prune_module`` works on a deep copy: it ranks channels by an importance criterion, removes
whole output channels (and every coupled input channel, BatchNorm entry, concat slice ...) and
checks that the pruned module still runs and keeps its output shapes. Kept channel counts are
rounded to the target's preferred multiple (``preferred_channel_multiple``), because a layer of
13 channels costs as much as one of 16 on a 4-lane SIMD unit.

Ignored layers keep their *output* channels (Torch-Pruning's semantics): the head keeps its
class count, but its input features shrink with the layer that feeds it. To freeze a layer's
weight entirely, also ignore the layer in front of it.

torch and torch_pruning are imported inside the functions (``edgeopt.stages.prune`` must import without them).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgeopt.config.settings import Criterion, PruneConfig, Scope  # noqa: F401 (re-exported)
from edgeopt.errors import InputError, first_validation_error
from edgeopt.stages.prune.attention import (
    find_attention_modules,
    head_step_ratio,
    heads_now,
    update_head_attributes,
)

# Never prune a layer below this many channels when the target expresses no preference.
_MIN_CHANNELS = 1

def make_prune_config(**kwargs: Any) -> PruneConfig:
    """``PruneConfig(**kwargs)`` with pydantic's error turned into an InputError (exit 2)."""
    from pydantic import ValidationError

    try:
        return PruneConfig(**kwargs)
    except ValidationError as exc:
        where, message = first_validation_error(exc, "(config)")
        raise InputError(f"pruning setting {where!r}: {message}",
                         "e.g. --prune 0.5 removes half of each layer's channels") from None


class LayerChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str  # Conv2d, Linear, ...
    out_before: int
    out_after: int
    in_before: int
    in_after: int


class HeadChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    heads_before: int
    heads_after: int
    head_size_before: int
    head_size_after: int


class PruneResult(BaseModel):
    """The pruned module (``module``, not serialised) and what changed."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    module: Any = Field(None, exclude=True)  # (None in a report read back)
    config: PruneConfig
    ignored_layers: list[str]
    ignored_auto_detected: bool
    channel_multiple: int | None
    layers: list[LayerChange]
    attention: list[HeadChange] = []
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    warnings: list[str] = []

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0


# ---------------------------------------------------------------------------------------------
# Target → channel multiple


def preferred_channel_multiple(target: Any) -> tuple[int | None, str]:
    """(multiple, why) for a ``TargetProfile``: its own ``preferred_channel_multiple`` when set,
    else the fp32 SIMD lane count of its ISA. Output channels map to accumulator lanes, which
    are 32-bit in int8 kernels too (SDOT/VNNI accumulate into int32), so the same count serves
    float and int8 models."""
    explicit = getattr(target, "preferred_channel_multiple", None)
    if explicit:
        return int(explicit), f"{target.name}: preferred_channel_multiple = {explicit} (target profile)"
    features = {f.lower() for f in getattr(target, "isa_features", ()) or ()}
    arch = str(getattr(target, "arch", "")).lower()
    if {"avx512f"} & features:
        return 16, f"{target.name}: AVX-512, 512-bit vectors = 16 fp32/int32 lanes"
    if {"avx2", "avx"} & features:
        return 8, f"{target.name}: AVX2, 256-bit vectors = 8 fp32/int32 lanes"
    if {"asimd", "neon", "sve", "sve2"} & features or arch in ("aarch64", "arm64"):
        return 4, f"{target.name}: NEON, 128-bit vectors = 4 fp32/int32 lanes"
    if {"mve", "mve.fp", "helium"} & features:
        return 4, f"{target.name}: Helium (MVE), 128-bit vectors = 4 fp32/int32 lanes"
    if arch in ("x86_64", "amd64"):
        return 4, f"{target.name}: SSE, 128-bit vectors = 4 fp32/int32 lanes"
    return None, f"{target.name}: no known vector width; channel counts are not rounded"


def round_channels(kept: int, multiple: int | None, current: int) -> int:
    """Kept channels rounded to the nearest multiple (at least one multiple, at most ``current``)."""
    if not multiple or multiple <= 1:
        return max(min(kept, current), _MIN_CHANNELS)
    rounded = max(multiple, int(math.floor(kept / multiple + 0.5)) * multiple)
    return min(rounded, current)


# ---------------------------------------------------------------------------------------------
# Helpers that need torch


def _import_tp() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise InputError("pruning needs Torch-Pruning, which is not installed",
                         "install the extra: pip install -c constraints.txt 'edgeopt[prune]'") from None
    return torch_pruning


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Torch-Pruning prints and warns while tracing; keep stdout/stderr for the CLI."""
    sink = io.StringIO()
    level = logging.getLogger("torch_pruning").level
    logging.getLogger("torch_pruning").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger("torch_pruning").setLevel(level)


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    return (example_inputs,)


class _LayerTracker:
    """Remembers the innermost module whose forward is running, to name the layer that failed."""

    def __init__(self, module: Any) -> None:
        self.stack: list[str] = []
        self.failed: str | None = None
        self.handles = []
        for name, sub in module.named_modules():
            if not name:
                continue
            self.handles.append(sub.register_forward_pre_hook(self._enter(name)))
            self.handles.append(sub.register_forward_hook(self._leave()))

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any) -> None:
            self.stack.append(name)
            self.failed = name
        return hook

    def _leave(self) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, _output: Any) -> None:
            if self.stack:
                self.stack.pop()
            self.failed = self.stack[-1] if self.stack else None
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _run(module: Any, inputs: tuple[Any, ...], what: str, hint: str) -> Any:
    """Run ``module`` under no_grad; an exception becomes an InputError naming the layer."""
    import torch

    tracker = _LayerTracker(module)
    try:
        with torch.no_grad():
            return module(*inputs)
    except Exception as exc:
        where = f" in layer {tracker.failed!r}" if tracker.failed else ""
        raise InputError(f"{what} fails{where}: {_line(exc)}", hint) from None
    finally:
        tracker.close()


def flat_tensors(outputs: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_flatten

    return [leaf for leaf in tree_flatten(outputs)[0] if isinstance(leaf, torch.Tensor)]


def count_params_and_macs(module: Any, example_inputs: Any) -> tuple[int, int]:
    """(parameters, multiply-accumulates for one run on ``example_inputs``) via Torch-Pruning's counter."""
    tp = _import_tp()
    inputs = _as_tuple(example_inputs)
    with _quiet():
        macs, params = tp.utils.count_ops_and_params(module, inputs if len(inputs) > 1 else inputs[0])
    return int(params), int(macs)


def _root_types() -> tuple[type, ...]:
    import torch

    return (torch.nn.modules.conv._ConvNd, torch.nn.Linear)


def detect_head_layers(module: Any, example_inputs: Any, *, graph: Any = None) -> list[str]:
    """Names of the Conv/Linear layers that produce the model's outputs (walking back from
    each output through activations, reshapes, pooling, adds and concats): pruning their
    output channels would change the output shapes."""
    tp = _import_tp()
    if graph is None:
        with _quiet():
            graph = tp.DependencyGraph().build_dependency(module, example_inputs=_as_tuple(example_inputs))
    names = {sub: name for name, sub in module.named_modules()}
    roots = _root_types()
    heads: list[str] = []
    seen: set[int] = set()
    stack = [node for node in graph.module2node.values() if not node.outputs]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, roots):
            name = names.get(node.module)
            if name is not None and name not in heads:
                heads.append(name)
            continue  # the layer's inputs are free to shrink
        stack.extend(node.inputs)
    return sorted(heads)


def _resolve_layers(module: Any, names: Sequence[str]) -> list[Any]:
    modules = dict(module.named_modules())
    unknown = [n for n in names if n not in modules or not n]
    if unknown:
        prunable = [n for n, m in modules.items() if isinstance(m, _root_types())]
        raise InputError(f"unknown layer name(s) to ignore: {', '.join(unknown)}",
                         f"use names from the model's named_modules(), e.g. {', '.join(prunable[-3:]) or '(none)'}")
    return [modules[n] for n in names]


def _check_traced(module: Any, inputs: tuple[Any, ...], graph: Any) -> None:
    """Refuse layers that ran but are missing from the dependency graph: their producers'
    pruning would not reach them (torch.no_grad, .detach(), custom autograd functions). The
    layer named first is one whose own output left autograd, when there is one: the layers
    before it are missing only because they are cut off from the outputs."""
    import torch

    roots = _root_types()
    called: dict[str, bool] = {}  # name -> its output is part of the autograd graph
    handles = []

    def record(name: str) -> Callable[..., None]:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            tensors = flat_tensors(output)
            called.setdefault(name, bool(tensors) and all(t.grad_fn is not None for t in tensors))
        return hook

    for name, sub in module.named_modules():
        if isinstance(sub, roots):
            handles.append(sub.register_forward_hook(record(name)))
    try:
        with torch.enable_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(module.named_modules())
    missing = [name for name in called if modules[name] not in graph.module2node]
    if missing:
        cut = [name for name in missing if not called[name]]
        first = cut[0] if cut else missing[0]
        others = len(missing) - 1
        raise InputError(
            f"Torch-Pruning cannot trace layer {first!r}"
            + (f" ({others} more layer(s) are cut off by it: {', '.join(n for n in missing if n != first)[:200]})"
               if others else "")
            + ": its output does not reach the autograd graph (torch.no_grad, .detach() or a custom op around it)",
            "make forward() differentiable around that layer, or export the model to ONNX and prune that")


def _importance(criterion: Criterion, module: Any) -> Any:
    import torch

    tp = _import_tp()
    if criterion == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        raise InputError("the bn_scale criterion needs BatchNorm layers, and the model has none",
                         "use --prune-criterion magnitude or taylor")
    return tp.importance.BNScaleImportance()


def _accumulate_gradients(module: Any, data_batches: Iterable[Any], loss_fn: Callable[..., Any] | None) -> int:
    """Gradients for the Taylor criterion: sum of the loss over the given batches."""
    import torch

    module.zero_grad(set_to_none=True)
    count = 0
    was_training = module.training
    module.eval()  # BatchNorm statistics stay as they are; only gradients are wanted
    try:
        with torch.enable_grad():
            for batch in data_batches:
                inputs, labels = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
                outputs = module(*_as_tuple(inputs))
                if loss_fn is not None:
                    loss = loss_fn(outputs, labels)
                elif labels is not None:
                    loss = torch.nn.functional.cross_entropy(flat_tensors(outputs)[0], labels)
                else:  # no labels: the output's energy stands in for the loss
                    loss = sum(t.float().pow(2).mean() for t in flat_tensors(outputs))
                loss.backward()
                count += 1
    finally:
        module.train(was_training)
    return count


def _layer_shapes(module: Any) -> dict[str, tuple[str, int, int]]:
    import torch

    shapes = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.modules.conv._ConvNd):
            shapes[name] = (type(sub).__name__, sub.out_channels, sub.in_channels)
        elif isinstance(sub, torch.nn.Linear):
            shapes[name] = (type(sub).__name__, sub.out_features, sub.in_features)
    return shapes


def prune_module(
    module: Any,
    example_inputs: Any,
    config: PruneConfig,
    *,
    data_batches: Iterable[Any] | None = None,
    loss_fn: Callable[[Any, Any], Any] | None = None,
) -> PruneResult:
    """Prune a deep copy of ``module`` (the argument is left as it is).

    ``example_inputs``: a tensor or a tuple of tensors for one forward call (batch 1 is
    enough). ``data_batches``: ``(inputs, labels)`` pairs, needed by the ``taylor`` criterion
    (a few batches suffice); the loss is ``loss_fn(outputs, labels)`` or cross-entropy.
    Raises InputError when there is nothing to prune, when a layer cannot be traced, or when
    the pruned model no longer runs (naming the layer).
    """
    import torch

    tp = _import_tp()
    inputs = _as_tuple(example_inputs)
    model = copy.deepcopy(module).cpu().eval()
    reference = flat_tensors(_run(model, inputs, "the model",
                                   "check the example inputs against forward()'s arguments"))

    try:
        with _quiet():
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs)
    except Exception as exc:
        tracker = _LayerTracker(model)
        try:
            with torch.enable_grad():
                model(*inputs)
        except Exception:
            pass
        tracker.close()
        where = f" (at layer {tracker.failed!r})" if tracker.failed else ""
        raise InputError(f"Torch-Pruning cannot trace the model{where}: {_line(exc)}",
                         "make forward() traceable by autograd, or export to ONNX and prune that") from None
    _check_traced(model, inputs, graph)

    auto = config.ignored_layers is None
    ignored_names = detect_head_layers(model, inputs, graph=graph) if auto else list(config.ignored_layers or [])
    ignored = _resolve_layers(model, ignored_names)
    ignored_all = [m for layer in ignored for m in layer.modules()]
    prunable = [group for group in graph.get_all_groups(ignored_layers=ignored_all, root_module_types=_root_types())]
    if not prunable:
        kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _root_types())})
        what = f"its only {'/'.join(kinds)} layers are ignored ({', '.join(ignored_names)})" if kinds else \
            "it has no Conv or Linear layers"
        raise InputError(f"the model has no prunable layers: {what}",
                         "pruning removes output channels of Conv/Linear layers that do not produce the model's outputs")

    importance = _importance(config.criterion, model)
    if config.criterion == "taylor":
        if data_batches is None:
            raise InputError("the taylor criterion needs data (a few labelled batches)",
                             "pass fine-tuning or calibration data, or use the magnitude criterion")
        data_batches = list(data_batches)
        if not data_batches:
            raise InputError("the taylor criterion got no data batches", "give at least one batch")

    before_shapes = _layer_shapes(model)
    params_before, macs_before = count_params_and_macs(model, inputs)
    result_warnings: list[str] = []
    attention, attention_notes = find_attention_modules(model)
    attention = [a for a in attention if not any(p in ignored_all for p in a.projections)]
    result_warnings.extend(attention_notes)
    if config.heads == "whole" and not attention:
        raise InputError("whole-head pruning found no attention module with a head count and separate q/k/v "
                         "Linear projections" + (f" ({'; '.join(attention_notes)})" if attention_notes else ""),
                         "use --prune-heads dims (or auto), or name the head-count attribute num_heads")
    head_options: dict[str, Any] = {}
    whole_heads = bool(attention) and config.heads != "dims"
    if attention:
        head_options = dict(num_heads={p: a.heads_before for a in attention for p in a.projections},
                            prune_num_heads=whole_heads, prune_head_dims=not whole_heads,
                            head_pruning_ratio=config.ratio if whole_heads else 0.0)

    with _quiet():
        pruner = tp.pruner.MetaPruner(
            model, inputs, importance=importance, global_pruning=config.scope == "global",
            pruning_ratio=config.ratio, iterative_steps=config.steps, ignored_layers=ignored,
            max_pruning_ratio=config.max_layer_ratio if config.scope == "global" else 1.0,
            round_to=None,  # rounded here, to the nearest multiple (Torch-Pruning rounds down, even to 0)
            **head_options,
        )
    for step in range(config.steps):
        if whole_heads and config.scope != "global":
            for block in attention:
                ratio = head_step_ratio(block.heads_before, heads_now(block, pruner.num_heads)[0], config.ratio,
                                        step, config.steps)
                for projection in block.projections:  # Torch-Pruning reads it for the group's first one
                    pruner.head_pruning_ratio_dict[projection] = [ratio] * (config.steps + 1)
        if config.criterion == "taylor":
            _accumulate_gradients(model, data_batches or [], loss_fn)
        with _quiet():
            for group in list(pruner.step(interactive=True)):
                _prune_group_rounded(pruner, group, config.channel_multiple)
        for block in attention:  # before the next forward pass (taylor) reshapes with them
            update_head_attributes(block, *heads_now(block, pruner.num_heads))
        model.zero_grad(set_to_none=True)

    outputs = flat_tensors(_run(model, inputs, "the pruned model",
                                 "Torch-Pruning missed a dependency there; add the layer to the ignored layers"))
    changed = [(a.shape, b.shape) for a, b in zip(reference, outputs) if a.shape != b.shape]
    if changed or len(outputs) != len(reference):
        raise InputError(f"pruning changed the model's output shapes ({changed[0][0]} → {changed[0][1]})"
                         if changed else "pruning changed the number of model outputs",
                         "ignore the layers that produce the outputs (--prune-ignore NAME)")
    params_after, macs_after = count_params_and_macs(model, inputs)
    after_shapes = _layer_shapes(model)
    layers = [LayerChange(name=name, kind=kind, out_before=out_b, in_before=in_b,
                          out_after=after_shapes[name][1], in_after=after_shapes[name][2])
              for name, (kind, out_b, in_b) in before_shapes.items() if name in after_shapes]
    if macs_after >= macs_before:
        result_warnings.append(
            f"pruning removed no work (MACs {macs_before} → {macs_after}); the ratio or the channel multiple "
            f"{config.channel_multiple} leaves every layer at its width")
    heads = [HeadChange(name=block.name, heads_before=block.heads_before, head_size_before=block.head_size_before,
                        heads_after=after[0], head_size_after=after[1])
             for block in attention for after in [heads_now(block, pruner.num_heads)]]
    return PruneResult(module=model.eval(), config=config, ignored_layers=ignored_names,
                       ignored_auto_detected=auto, channel_multiple=config.channel_multiple,
                       layers=layers, attention=heads, params_before=params_before, params_after=params_after,
                       macs_before=macs_before, macs_after=macs_after, warnings=result_warnings)


def _prune_group_rounded(pruner: Any, group: Any, multiple: int | None) -> None:
    """Prune a group proposed by Torch-Pruning, with its kept channel count rounded."""
    graph = pruner.DG
    dep, idxs = group[0].dep, list(group[0].idxs)
    layer, handler = dep.target.module, dep.handler
    current = graph.get_out_channels(layer) if graph.is_out_channel_pruning_fn(handler) else \
        graph.get_in_channels(layer)
    if current is None or pruner._get_channel_groups(group) > 1:
        group.prune()  # grouped channels: Torch-Pruning keeps the groups consistent itself
        return
    kept = round_channels(current - len(set(idxs)), multiple, current)
    n_pruned = current - kept
    if n_pruned <= 0:
        return
    if n_pruned == len(set(idxs)):
        group.prune()
        return
    full = graph.get_pruning_group(layer, handler, list(range(current)))
    scores = pruner.estimate_importance(full)
    if scores is None:
        group.prune()
        return
    order = scores.argsort().tolist()
    graph.get_pruning_group(layer, handler, sorted(order[:n_pruned])).prune()


def export_module(module: Any, specs: Sequence[Any], out_path: Path, *, opset: int | None = None,
                  dynamic_batch: bool = True, output_names: list[str] | None = None) -> Any:
    """Export a (pruned) module to ONNX with edgeopt's exporter (dynamic batch when it can);
    ``specs`` are ``InputSpec``s in forward() order (concrete but for a batch axis)."""
    from edgeopt.data import random_inputs
    from edgeopt.data.specs import InputSpec, is_batch_axis, require_concrete
    from edgeopt.formats.artifact import ModelFormat
    from edgeopt.formats.torch import TorchSource
    from edgeopt.formats.torch_onnx import export_torch, to_torch_inputs

    # a free batch axis (an ONNX source's "batch") is traced at 1; other symbolic dims need a size
    specs = require_concrete([InputSpec(s.name, (1, *s.shape[1:]), s.dtype) if is_batch_axis(s) else s
                              for s in specs], "exporting the pruned module")
    source = TorchSource(module.eval(), ModelFormat.TORCH_FACTORY, [s.name for s in specs],
                         description="pruned module")
    example = to_torch_inputs(list(specs), random_inputs(list(specs), seed=0))
    count = len(flat_tensors(_run(module, example, "the pruned model", "check the input specs")))
    return export_torch(source, list(specs), Path(out_path), opset=opset, dynamic_batch=dynamic_batch,
                        output_count=count, output_names=output_names)


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]
