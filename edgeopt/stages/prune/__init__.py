"""Structured pruning and fine-tuning of PyTorch modules (and of ONNX graphs converted to torch).

Entry points (torch is imported only when one of them runs, never at ``import edgeopt``):

- ``structured``: ``PruneConfig``, ``prune_module`` → ``PruneResult`` (Torch-Pruning's dependency
  graph; channel counts rounded to the target's preferred multiple, ``preferred_channel_multiple``);
- ``finetuning``: ``FinetuneConfig``, ``load_finetune_data`` → ``FinetuneData``, ``finetune`` →
  ``FinetuneResult`` (early stopping on validation loss, best state restored, optional distillation);
- ``onnx_convert``: ``onnx_to_torch`` → ``ConvertedOnnx`` (a torch.fx module whose Conv/Linear/BatchNorm
  are real layers), ``unsupported_ops`` to ask first;
- ``metrics``: ``onnx_figures`` / ``flag_not_faster`` for the per-step report rows.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "PruneConfig": "edgeopt.stages.prune.structured",
    "PruneResult": "edgeopt.stages.prune.structured",
    "LayerChange": "edgeopt.stages.prune.structured",
    "prune_module": "edgeopt.stages.prune.structured",
    "detect_head_layers": "edgeopt.stages.prune.structured",
    "preferred_channel_multiple": "edgeopt.stages.prune.structured",
    "count_params_and_macs": "edgeopt.stages.prune.structured",
    "export_module": "edgeopt.stages.prune.structured",
    "FinetuneConfig": "edgeopt.stages.prune.finetuning",
    "FinetuneData": "edgeopt.stages.prune.finetuning",
    "FinetuneResult": "edgeopt.stages.prune.finetuning",
    "EpochRecord": "edgeopt.stages.prune.finetuning",
    "finetune": "edgeopt.stages.prune.finetuning",
    "evaluate": "edgeopt.stages.prune.finetuning",
    "load_finetune_data": "edgeopt.stages.prune.finetuning",
    "ConvertedOnnx": "edgeopt.stages.prune.onnx_convert",
    "onnx_to_torch": "edgeopt.stages.prune.onnx_convert",
    "unsupported_ops": "edgeopt.stages.prune.onnx_convert",
    "ModelFigures": "edgeopt.stages.prune.metrics",
    "onnx_figures": "edgeopt.stages.prune.metrics",
    "flag_not_faster": "edgeopt.stages.prune.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: the submodules import torch, which edgeopt must not need at import time.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'edgeopt.stages.prune' has no attribute {name!r}")
