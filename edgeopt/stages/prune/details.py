"""What the prune stage reports: the path it took, what pruning removed, the fine-tuning curve and the
per-step figures (unpruned, pruned, fine-tuned, and quantized when int8 ships)."""

from __future__ import annotations

from pydantic import Field

from edgeopt.stages.common.records import StageDetails, absent, register_details
from edgeopt.stages.prune.finetuning import FinetuneResult
from edgeopt.stages.prune.metrics import ModelFigures
from edgeopt.stages.prune.structured import PruneResult


@register_details("prune")
class PruneDetails(StageDetails):
    path: str | None = Field(None, exclude_if=absent)  # "torch source" or "ONNX graph converted to torch"
    prune: PruneResult | None = Field(None, exclude_if=absent)
    finetune: FinetuneResult | None = None
    accuracy_data: str | None = None  # the labelled samples every step's accuracy was measured on
    steps: list[ModelFigures] = []
    not_faster: list[str] = []
