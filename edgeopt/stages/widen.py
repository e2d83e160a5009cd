"""The widen stage: thin convolutions (few output channels) computing several output columns at once
(graph/onnx_conv_widening.py), each factor kept only where that Conv alone measured faster, on the machine
the model is timed on: this one for the ``host`` target, the ``--ssh`` device when there is one. Elsewhere
(another target, no device) nothing is measured and nothing changes. The rewrite is exact; the result is
parity-checked like every float graph."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeopt.stages.common.context import StageContext, StageModel, graph_input_shapes
from edgeopt.stages.common.records import StageDetails, absent, register_details

MIN_MACS = 2_000_000  # smaller Convs take microseconds: not worth a timing
MAX_TIMED = 8  # the largest candidates timed (a few seconds each)
MIN_GAIN = 0.10  # a factor is kept when its Conv measured at most 0.9x of the original
VERSION = 1  # (in the cache key)


class WidenedConv(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    channels: int
    factor: int | None  # None: timed, kept as it was
    ratio: float | None = None  # the widened Conv's latency over the original's (the best factor's)
    original_ms: float | None = None


@register_details("widen")
class WidenDetails(StageDetails):
    measured_on: str | None = Field(None, exclude_if=absent)
    convs: list[WidenedConv] = Field(default_factory=list)
    # the widened kernels' zeros and copies, stored (what the file grows by)
    bytes_added: int | None = Field(None, exclude_if=absent)


class WidenStage:
    name = "widen"

    def applies(self, context: StageContext) -> bool:
        return context.config.widen_convs and (context.device is not None or context.config.targets[0] == "host")

    def cache_key(self, context: StageContext) -> dict:
        # what was faster depends on where it was timed
        from edgeopt.runtime.host_calibration import machine_key

        return {"widen": VERSION, "threads": context.config.quantize.threads,
                "device": context.device.name if context.device else None,
                "host": None if context.device else machine_key(), **context.parity_key()}

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        import onnx

        from edgeopt.graph.onnx_conv_widening import conv_alone, has_thin_conv_weights, node_key, thin_convs, widen
        from edgeopt.graph.onnx_shapes import resolve_shapes

        proto = model.proto
        if not has_thin_conv_weights(proto):  # (most models: no shape resolution needed)
            return model
        specs = context.plan.specs if context.plan else []
        try:
            shapes = {name: info.shape
                      for name, info in resolve_shapes(proto, graph_input_shapes(proto, specs)).items()}
            conv_inputs = {node_key(n): n.input[0] for n in proto.graph.node if n.op_type == "Conv"}
            candidates = [c for c in thin_convs(proto, shapes, _other_shapes(proto, specs))
                          if c.macs >= MIN_MACS and shapes.get(conv_inputs[c.node]) is not None]
        except Exception as exc:  # noqa: BLE001 - an optional speed-up: a graph it cannot read stays as it is
            context.events.scoped("widen").note(f"thin convolutions not examined ({type(exc).__name__}: {exc})")
            return model
        if not candidates:
            return model
        with context.stage("widen", "Widening thin convolutions") as record:
            device = context.device
            where = device.name if device is not None else "host"
            record.options = {"measured_on": where, "threads": context.config.quantize.threads}
            details = WidenDetails(measured_on=where)
            record.details = details
            chosen = []
            timed = candidates[:MAX_TIMED]
            events = context.events.scoped("widen")
            for done, conv in enumerate(timed):
                events.progress(done, len(timed), conv.node)
                input_shape = shapes[conv_inputs[conv.node]]
                # "float" is the Conv as it is: the label device and host timing take ratios to
                variants = {"float": conv_alone(proto, conv, input_shape, None).SerializeToString()}
                for factor in conv.factors:
                    variants[f"x{factor}"] = conv_alone(proto, conv, input_shape, factor).SerializeToString()
                feeds = {conv_inputs[conv.node]: np.random.default_rng(0).standard_normal(input_shape)
                         .astype(conv.dtype)}
                stats = _time(variants, feeds, context, events)
                best = _choose(stats)
                ratio = float(stats[best].ratio_to_reference) if best else float(min(
                    stats[label].ratio_to_reference for label in stats if label != "float"))
                factor = int(best[1:]) if best else None
                details.convs.append(WidenedConv(node=conv.node, channels=conv.channels, factor=factor,
                                                 ratio=round(ratio, 3),
                                                 original_ms=round(stats["float"].median_ms, 4)))
                if factor is not None:
                    chosen.append((conv, factor))
            events.progress(len(timed), len(timed))
            if not chosen:
                record.status = "skipped"
                return model
            widened = onnx.ModelProto()
            widened.CopyFrom(proto)
            for conv, factor in chosen:
                widen(widened, conv, factor)
            details.bytes_added = widened.ByteSize() - proto.ByteSize()
            return context.save_checked(record, "widen", widened, context.reference, parent=context.last_artifact())


def _choose(stats: dict) -> str | None:
    """The smallest factor within 10% of the fastest's time, when that is at least MIN_GAIN faster than the
    original: a wider factor stores more (zero-padded) weights for little more speed."""
    ratios = {label: float(s.ratio_to_reference) for label, s in stats.items() if label != "float"}
    fastest = min(ratios.values())
    if fastest > 1 - MIN_GAIN:
        return None
    near = [label for label, ratio in ratios.items() if ratio <= min(fastest * 1.1, 1 - MIN_GAIN)]
    return min(near, key=lambda label: int(label[1:]))


def _time(variants: dict[str, bytes], feeds: dict[str, np.ndarray], context: StageContext, events) -> dict:
    if context.device is not None:
        return context.device.latency(variants, feeds, events.scoped(device=context.device.name))
    from edgeopt.runtime.latency import compare_latency

    return compare_latency(variants, feeds, reference="float", threads=context.config.quantize.threads,
                           min_time_s=0.3, budget_s=2.0, min_runs=7)


def _other_shapes(proto, specs) -> dict[str, tuple[int, ...] | None] | None:
    """Every tensor's shape with each free input dim doubled (None when no input dim is free): a Conv
    whose output width changes with the inputs is not widened (the Reshape back fixes the width)."""
    from edgeopt.data import is_symbolic
    from edgeopt.errors import EdgeoptError
    from edgeopt.graph.onnx_shapes import declared_input_specs, resolve_shapes

    declared = {s.name: s for s in declared_input_specs(proto)}
    doubled = {}
    free = False
    for spec in specs:
        if spec.name not in declared:
            continue
        dims = []
        for size, dim in zip(spec.shape, declared[spec.name].shape):
            free = free or is_symbolic(dim)
            dims.append(2 * int(size) if is_symbolic(dim) else int(size))
        doubled[spec.name] = dims
    if not free:
        return None
    try:
        return {name: info.shape for name, info in resolve_shapes(proto, doubled).items()}
    except EdgeoptError:
        return {}
