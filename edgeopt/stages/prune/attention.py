"""Attention modules for head pruning: finding them, and keeping their head attributes true.

A hand-written attention block reshapes its q/k/v projections with its own attributes
(``x.view(b, n, self.num_heads, self.head_dim)``). Torch-Pruning shrinks the projections but
cannot know those attributes, so after pruning the module would reshape with stale numbers
and fail. Here: modules with an integer head-count attribute and separate q, k, v ``Linear``
projections are found, handed to Torch-Pruning as attention (``num_heads``), and their head
count, head size, total size and softmax scale are rewritten after every pruning step.

Not covered (reported, heads kept): ``nn.MultiheadAttention`` (one packed in-projection;
Torch-Pruning narrows its embedding instead, keeping the head count), and fused ``qkv``
projections, whose per-head layout (q/k/v interleaved or stacked) differs between libraries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "nhead", "heads")
_HEAD_SIZE_ATTRS = ("head_dim", "attention_head_size", "head_size", "d_k", "dim_head")
_ALL_HEADS_ATTRS = ("all_head_size", "inner_dim")
_PROJECTION_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q", "k", "v"),
                     ("q_lin", "k_lin", "v_lin"), ("wq", "wk", "wv"), ("to_q", "to_k", "to_v"),
                     ("q_linear", "k_linear", "v_linear"))
_FUSED_NAMES = ("qkv", "in_proj", "c_attn", "query_key_value")


@dataclass
class AttentionModule:
    name: str
    module: Any
    head_attr: str
    projections: tuple[Any, Any, Any]  # q, k, v Linear layers
    heads_before: int
    head_size_before: int


def find_attention_modules(model: Any) -> tuple[list[AttentionModule], list[str]]:
    """(attention modules whose heads can be pruned, notes on those that cannot)."""
    from torch import nn

    found: list[AttentionModule] = []
    notes: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            notes.append(f"{name or 'the model'}: nn.MultiheadAttention keeps its {module.num_heads} heads "
                         "(Torch-Pruning narrows its embedding instead)")
            continue
        head_attr = next((a for a in _HEAD_COUNT_ATTRS if isinstance(getattr(module, a, None), int)
                          and not isinstance(getattr(module, a), bool) and getattr(module, a) >= 1), None)
        if head_attr is None:
            continue
        heads = getattr(module, head_attr)
        projections = next((tuple(getattr(module, n) for n in names) for names in _PROJECTION_NAMES
                            if all(isinstance(getattr(module, n, None), nn.Linear) for n in names)), None)
        if projections is None:
            fused = next((n for n in _FUSED_NAMES if isinstance(getattr(module, n, None), nn.Linear)), None)
            if fused is not None:
                notes.append(f"{name}: fused '{fused}' projection, {heads} heads kept (only separate q/k/v "
                             "projections are head-pruned)")
            continue
        sizes = {p.out_features for p in projections}
        if len(sizes) != 1 or next(iter(sizes)) % heads:
            notes.append(f"{name}: q/k/v projections of sizes {sorted(sizes)} do not split into {heads} heads; "
                         "heads kept")
            continue
        found.append(AttentionModule(name=name, module=module, head_attr=head_attr, projections=projections,
                                     heads_before=heads, head_size_before=next(iter(sizes)) // heads))
    return found, notes


def heads_now(attention: AttentionModule, pruner_heads: dict[Any, int]) -> tuple[int, int]:
    """(heads, head size) after pruning, from Torch-Pruning's head count and the projections' width."""
    q = attention.projections[0]
    heads = int(pruner_heads.get(q, getattr(attention.module, attention.head_attr)))
    return heads, q.out_features // max(heads, 1)


def head_step_ratio(heads_initial: int, heads_current: int, ratio: float, step: int, steps: int) -> float:
    """The head ratio to hand Torch-Pruning for one per-layer step so that, after ``step`` (0-based)
    of ``steps``, round(heads_initial * ratio * (step + 1) / steps) heads are gone (at least one kept).

    Torch-Pruning removes ceil(r * current heads) with r the cumulative target, which removes
    too many from the second step on (0.25 in two steps of 8 heads leaves 5, not 6) and rounds
    every fraction up; this returns the r for which that ceil is the wanted count."""
    kept = max(1, heads_initial - round(heads_initial * ratio * (step + 1) / steps))
    remove = max(0, heads_current - kept)
    return 0.0 if remove == 0 else (remove - 0.5) / heads_current


def update_head_attributes(attention: AttentionModule, heads: int, head_size: int) -> None:
    """Write the pruned head count and size into the module's own attributes."""
    module = attention.module
    old_heads = getattr(module, attention.head_attr)
    old_size = next((getattr(module, a) for a in _HEAD_SIZE_ATTRS if isinstance(getattr(module, a, None), int)),
                    attention.projections[0].out_features // max(old_heads, 1))
    setattr(module, attention.head_attr, heads)
    for attr in _HEAD_SIZE_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, head_size)
    for attr in _ALL_HEADS_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, heads * head_size)
    scale = getattr(module, "scale", None)
    # 1/sqrt(head size), as every scaled dot-product attention stores it; anything else is left alone.
    if isinstance(scale, float) and old_size and math.isclose(scale, old_size ** -0.5, rel_tol=1e-6):
        module.scale = head_size ** -0.5
