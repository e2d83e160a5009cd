"""Quantization recipes, and how a target's ISA picks the default.

The defaults follow onnxruntime's CPU kernels, and what we measured on this project's
x86 CI CPU (AVX-512 VNNI): QDQ with u8 activations and s8 per-channel weights ran
0.64x of fp32 on a MobileNetV2-style CNN; QOperator with s8 activations ran 4.5x
*slower* than fp32 (one-off measurement while choosing these defaults;
benchmarks/quantize.py compares edgeopt with onnxruntime's default QDQ recipe).
onnxruntime's quantization guide recommends U8S8 on x86-64 and S8S8 (QDQ) on ARM64;
x86 without VNNI needs reduce_range to avoid the u8×s8 saturation of VPMADDUBSW.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgeopt.stages.quantize.recurrent import RECURRENT_OPS
from edgeopt.targets import TargetProfile, isa_family_of

QuantizeMode = Literal["auto", "static", "dynamic", "weights-only", "none"]
# Ops whose weights carry most of a model's bytes and MACs.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Gather: embedding tables are most of a transformer's bytes.
DYNAMIC_OPS = ("MatMul", "Gemm", "LSTM", "GRU", "Attention", "Gather")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["static", "dynamic", "weights-only"]
    format: Literal["qdq", "qoperator"] = "qdq"
    activation_type: Literal["u8", "s8"] = "u8"
    weight_type: Literal["s8", "u8"] = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    # per-activation: each tensor's range by least expected error (calibration.least_error_range)
    calibration: Literal["minmax", "entropy", "percentile", "per-activation"] = "minmax"
    op_types: tuple[str, ...] | None = None  # None: every op the quantizer supports
    nodes_to_exclude: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        if self.mode == "dynamic":
            return f"dynamic-{self.weight_type}" + ("-perchannel" if self.per_channel else "")
        if self.mode == "weights-only":
            return f"weights-only-{self.weight_type}" + ("-perchannel" if self.per_channel else "")
        parts = [self.format, f"{self.activation_type}{self.weight_type}",
                 "perchannel" if self.per_channel else "pertensor", self.calibration]
        if self.reduce_range:
            parts.append("reduce-range")
        if self.op_types is not None:
            parts.append("ops-" + "+".join(self.op_types).lower())
        name = "static-" + "-".join(parts)
        return name + (f"-float{len(self.nodes_to_exclude)}" if self.nodes_to_exclude else "")

    def excluding(self, nodes: list[str]) -> Recipe:
        return self.model_copy(update={"nodes_to_exclude": tuple(sorted(set(self.nodes_to_exclude) | set(nodes)))})

    def weight_range_twin_of(self, other: Recipe) -> bool:
        """The same recipe but for reduce_range (7-bit vs 8-bit weights), nodes kept in float aside."""
        strip = {"reduce_range": False, "nodes_to_exclude": ()}
        return self.reduce_range != other.reduce_range and \
            self.model_copy(update=strip) == other.model_copy(update=strip)


class RecipeChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: Recipe
    reason: str


def isa_family(target: TargetProfile) -> str:
    return isa_family_of(target.arch, target.isa_features)


def recipe_target_of_device(target: TargetProfile, facts: dict, device: str) -> tuple[TargetProfile, str | None]:
    """``target`` with the CPU of the device that measures the candidates (``--ssh``): its int8 kernels decide
    which recipe can pay, whatever the profile says; a note when the two disagree."""
    from edgeopt.targets import INT8_RELEVANT_FLAGS

    machine = facts.get("machine")
    if not machine:
        return target, None
    features = tuple(sorted(set(facts.get("cpu_features") or ()) & INT8_RELEVANT_FLAGS))
    device_family, profile_family = isa_family_of(machine, features), isa_family(target)
    measured = target.model_copy(update={"arch": machine, "isa_features": features})
    if device_family == profile_family:
        return measured, None
    return measured, (f"int8 recipe for {device}'s CPU ({machine}, {device_family}), which measures the "
                      f"candidates, not for {target.name}'s ({target.arch}, {profile_family})")


def default_static(target: TargetProfile, overrides: dict[str, object] | None = None) -> RecipeChoice:
    family = isa_family(target)
    if family == "x86-vnni":
        recipe, why = Recipe(mode="static", activation_type="u8"), (
            "x86 with VNNI: onnxruntime's u8-activation × s8-weight kernels are its fast int8 path")
    elif family == "x86":
        recipe, why = Recipe(mode="static", activation_type="u8", reduce_range=True), (
            "x86 without VNNI: u8×s8 with reduce_range avoids saturation in the AVX2 int8 kernels")
    elif family in ("arm-dot", "arm"):
        recipe, why = Recipe(mode="static", activation_type="s8"), (
            "ARM64: onnxruntime recommends S8S8 in QDQ format (sdot/smmla kernels)"
            + ("" if family == "arm-dot" else "; no dot-product extension, expect modest gains"))
    else:
        recipe, why = Recipe(mode="static"), "unknown ISA: the generic QDQ u8/s8 recipe"
    if overrides:
        recipe = recipe.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        why += "; user overrides: " + ", ".join(f"{k}={v}" for k, v in overrides.items() if v is not None)
    return RecipeChoice(recipe=recipe, reason=why)


def candidate_recipes(
    target: TargetProfile,
    mode: QuantizeMode,
    *,
    has_calibration: bool,
    op_histogram: dict[str, int],
    overrides: dict[str, object] | None = None,
) -> list[RecipeChoice]:
    """The recipes to try, best guess first. ``auto`` tries alternatives that the
    host measurement can pick from; explicit modes try only that mode."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if mode == "none":
        return []
    if mode == "dynamic":
        return [RecipeChoice(recipe=Recipe(mode="dynamic", op_types=DYNAMIC_OPS, **_only(overrides, "per_channel",
                                                                                      "weight_type")),
                             reason="requested: dynamic quantization (weights int8, activations quantized at run time)")]
    if mode == "weights-only":
        return [RecipeChoice(recipe=Recipe(mode="weights-only", **_only(overrides, "per_channel", "weight_type")),
                             reason="requested: int8 weights, float compute (smaller file, same speed)")]
    primary = default_static(target, overrides)
    if mode == "static":
        return [primary]
    # auto
    choices: list[RecipeChoice] = []
    if has_calibration:
        choices.append(primary)
        flipped = "s8" if primary.recipe.activation_type == "u8" else "u8"
        family = isa_family(target)
        if family in ("x86", "x86-vnni") and primary.recipe.activation_type == "u8" and "reduce_range" not in overrides:
            # Whether u8×s8 pair sums saturate depends on the CPU the kernels run on (VPMADDUBSW without
            # VNNI) and on the data, not on the target file alone (an emulated or misreported CPU): both
            # weight ranges are measured, and the more faithful of equally fast candidates ships.
            other = not primary.recipe.reduce_range
            choices.append(RecipeChoice(
                recipe=primary.recipe.model_copy(update={"reduce_range": other}),
                reason=("7-bit weights (reduce_range): no int16 saturation on AVX2-only CPUs; kept if measured "
                        "more faithful" if other else "full 8-bit weights: more precise when the measured error "
                        "shows no saturation on this CPU and data")))
        if "activation_type" not in overrides:
            choices.append(RecipeChoice(
                recipe=primary.recipe.model_copy(update={"activation_type": flipped}),
                reason=f"alternative activation type {flipped} (kept only if measured faster)"))
        compute = sum(op_histogram.get(op, 0) for op in COMPUTE_OPS)
        others = sum(op_histogram.values()) - compute
        if compute and others >= compute and "op_types" not in overrides:
            # Q/DQ pairs around every Add/Mul/LayerNorm can cost more than int8 GEMMs save.
            # (an LSTM's dynamic int8 form adds no Q/DQ pairs between ops: it stays in)
            recurrent = tuple(op for op in RECURRENT_OPS if op_histogram.get(op))
            choices.append(RecipeChoice(
                recipe=primary.recipe.model_copy(update={"op_types": COMPUTE_OPS + recurrent}),
                reason="fewer quantized ops: only Conv/MatMul/Gemm" + "".join(f"/{op}" for op in recurrent)
                       + ", everything between them stays float"))
    recurrent_or_matmul = sum(op_histogram.get(op, 0) for op in ("MatMul", "LSTM", "GRU", "Attention"))
    conv = sum(op_histogram.get(op, 0) for op in ("Conv", "ConvTranspose"))
    if recurrent_or_matmul and (recurrent_or_matmul >= conv or not has_calibration):
        choices.append(RecipeChoice(
            recipe=Recipe(mode="dynamic", op_types=DYNAMIC_OPS, **_only(overrides, "per_channel", "weight_type")),
            reason="MatMul/recurrent-heavy graph: dynamic quantization needs no activation ranges"))
    return choices


def _only(values: dict[str, object], *keys: str) -> dict[str, object]:
    return {k: values[k] for k in keys if k in values}
