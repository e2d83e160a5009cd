"""The profile stage: the static estimate of the final model on every requested target (roofline latency,
memory fit, accelerator placement), at the run's resolved input shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgeopt.analysis.profile import StaticProfile
from edgeopt.errors import EdgeoptError
from edgeopt.stages.common.context import StageContext, StageModel, graph_input_shapes
from edgeopt.stages.common.records import StageDetails, register_details


@register_details("profile")
class ProfileDetails(StageDetails):
    """The static profile of the final model on each target, under the target's name."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, StaticProfile] = Field(init=False)

    @property
    def estimates(self) -> dict[str, StaticProfile]:
        return dict(self.__pydantic_extra__ or {})


class TargetVerdict(BaseModel):
    """The static estimate's verdict on one target (the report's summary.targets[name])."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float | None = None
    threads: int | None = None  # the CPU threads the latency is priced at
    estimate_unavailable_reason: str | None = None
    fits: bool | None = None
    weight_bytes: int | None = None
    peak_activation_bytes: int | None = None
    # the runtime's peak RSS increase, estimated part by part (analysis.runtime_memory); None: not modelled
    peak_memory_bytes: int | None = None
    # the estimates' expected relative errors (analysis.validation); None: not validated on this target
    latency_error: float | None = None
    memory_error: float | None = None
    accelerator: str | None = None
    accelerator_nodes: int = 0
    cpu_nodes: int = 0
    partitions: int = 0
    full_int8_required: bool = False
    full_int8: bool = False

    @classmethod
    def of(cls, estimate: StaticProfile) -> TargetVerdict:
        return cls(latency_ms=estimate.latency_ms, threads=estimate.threads,
                   estimate_unavailable_reason=estimate.estimate_unavailable_reason,
                   fits=estimate.fits_all, weight_bytes=estimate.weight_bytes,
                   peak_activation_bytes=estimate.peak_activation_bytes, accelerator=estimate.accelerator,
                   peak_memory_bytes=(estimate.runtime_memory.peak_increase_bytes if estimate.runtime_memory
                                      else None),
                   latency_error=estimate.latency_error, memory_error=estimate.memory_error,
                   accelerator_nodes=estimate.accelerator_node_count, cpu_nodes=estimate.cpu_node_count,
                   partitions=estimate.partitions, full_int8_required=estimate.full_int8_required,
                   full_int8=estimate.full_int8)


class ProfileStage:
    name = "profile"

    def applies(self, context: StageContext) -> bool:
        return True

    def run(self, model: StageModel | None, context: StageContext) -> StageModel | None:
        from edgeopt.analysis.profile import static_profile
        from edgeopt.graph.build import build_graph
        from edgeopt.runtime.host_calibration import host_for_estimates
        from edgeopt.targets import host_cpu_of, load_target

        with context.stage("profile", "Profiling for targets") as record:
            shapes = graph_input_shapes(model.proto, context.reference.specs)
            # the inputs' known values (fills, integer data) decide an If's branch (graph.onnx_branches)
            values = context.plan.known_values() if context.plan is not None else None
            verdicts: dict[str, TargetVerdict] = {}
            estimates: dict[str, StaticProfile] = {}
            graph = None
            for name in context.config.targets:
                target = host_for_estimates(load_target(name, context.targets_dir()), context.events)
                try:
                    graph = graph or build_graph(model.proto, shapes, input_values=values)
                    estimate = static_profile(graph, target, cpu_target=host_cpu_of(target, context.targets_dir()))
                except EdgeoptError as exc:
                    record.warnings.append(f"no static profile for {name}: {exc.message}")
                    continue
                estimates[name] = estimate
                verdicts[name] = TargetVerdict.of(estimate)
            record.details = ProfileDetails(**estimates)
            context.facts["target_verdicts"] = verdicts
        return model

    def summary(self, final: Any, context: StageContext) -> dict[str, Any]:
        return {"targets": context.facts.get("target_verdicts", {})}
