"""Numerical parity between a produced graph and its source.

Scale-aware: an output passes when max|diff| <= atol + rtol * max|reference| and,
for float outputs with signal, cosine similarity >= min_cosine. Integer and bool
outputs must match exactly; NaNs must sit in the same places.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeopt.numeric import channel_cosines


class OutputParity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    max_abs_diff: float
    max_rel_diff: float
    cosine: float | None  # None when both outputs are all zeros or non-float
    exact: bool  # integer/bool outputs must match exactly
    passed: bool
    mismatch: str | None = None  # why values could not be compared at all (shapes, output count)


class ParityCheck(BaseModel):
    """A produced graph compared with its source on the same inputs."""

    model_config = ConfigDict(extra="forbid")

    candidate: str  # path of the graph checked
    reference: str  # what it was compared with ("torch source", a path, ...)
    samples: int
    atol: float
    rtol: float
    min_cosine: float
    batch_sizes: list[int]
    outputs: list[OutputParity]
    passed: bool


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-3
    min_cosine: float = 0.9999


def compare_output(name: str, reference: np.ndarray, candidate: np.ndarray, tol: Tolerance) -> OutputParity:
    reference = np.asarray(reference)
    candidate = np.asarray(candidate)
    if reference.shape != candidate.shape:
        return OutputParity(name=name, max_abs_diff=float("inf"), max_rel_diff=float("inf"),
                            cosine=None, exact=False, passed=False,
                            mismatch=f"shape {list(candidate.shape)} where the source gives {list(reference.shape)}")
    if reference.dtype.kind not in "fc" or candidate.dtype.kind not in "fc":
        equal = bool(np.array_equal(reference, candidate))
        diff = 0.0 if equal or reference.size == 0 else float(
            np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64))))
        return OutputParity(name=name, max_abs_diff=diff, max_rel_diff=diff, cosine=None, exact=equal, passed=equal)
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    nan_ref, nan_cand = np.isnan(ref), np.isnan(cand)
    if not np.array_equal(nan_ref, nan_cand):
        return OutputParity(name=name, max_abs_diff=float("nan"), max_rel_diff=float("nan"),
                            cosine=None, exact=False, passed=False)
    finite = ~nan_ref
    ref, cand = ref[finite], cand[finite]
    if ref.size == 0:
        return OutputParity(name=name, max_abs_diff=0.0, max_rel_diff=0.0, cosine=None, exact=True, passed=True)
    inf_mismatch = bool(np.any(np.isinf(ref) != np.isinf(cand)) or np.any(ref[np.isinf(ref)] != cand[np.isinf(ref)]))
    both_finite = np.isfinite(ref) & np.isfinite(cand)
    ref, cand = ref[both_finite], cand[both_finite]
    max_abs = float(np.max(np.abs(ref - cand))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    norms = float(np.linalg.norm(ref)) * float(np.linalg.norm(cand))
    cosine = float(np.dot(ref.ravel(), cand.ravel()) / norms) if norms > 0 else None
    # The worst last-axis channel too: scores in [0, 1] next to boxes in pixels must not hide
    # behind the boxes' scale (rtol * max|ref| would forgive any error in them).
    channel = None
    if reference.ndim >= 2 and max_abs > tol.atol:
        channel, _ = channel_cosines(np.where(np.isfinite(reference), reference, 0).astype(np.float64),
                                     np.where(np.isfinite(candidate), candidate, 0).astype(np.float64))
    if channel is not None and (cosine is None or channel < cosine):
        cosine = channel
    passed = (
        not inf_mismatch
        and max_abs <= tol.atol + tol.rtol * scale
        and (cosine is None or cosine >= tol.min_cosine or max_abs <= tol.atol)
    )
    return OutputParity(name=name, max_abs_diff=max_abs, max_rel_diff=max_rel, cosine=cosine,
                        exact=max_abs == 0 and not inf_mismatch, passed=passed)


def merge_checks(name: str, results: list[OutputParity]) -> OutputParity:
    """Worst case over several samples of the same output."""
    cosines = [r.cosine for r in results if r.cosine is not None]
    return OutputParity(
        name=name,
        max_abs_diff=max(r.max_abs_diff for r in results),
        max_rel_diff=max(r.max_rel_diff for r in results),
        cosine=min(cosines) if cosines else None,
        exact=all(r.exact for r in results),
        passed=all(r.passed for r in results),
        mismatch=next((r.mismatch for r in results if r.mismatch), None),
    )


def parity_check(
    candidate_label: str,
    reference_label: str,
    samples: list[tuple[list[np.ndarray], list[np.ndarray]]],
    output_names: list[str],
    tol: Tolerance,
    batch_sizes: list[int],
) -> ParityCheck:
    """``samples`` pairs reference outputs with candidate outputs, both in output order."""
    per_output: dict[int, list[OutputParity]] = {}
    for reference_outputs, candidate_outputs in samples:
        if len(reference_outputs) != len(candidate_outputs):
            mismatch = OutputParity(name="<output count>", max_abs_diff=float("inf"), max_rel_diff=float("inf"),
                                    cosine=None, exact=False, passed=False,
                                    mismatch=f"{len(candidate_outputs)} outputs where the source gives "
                                             f"{len(reference_outputs)}")
            return ParityCheck(candidate=candidate_label, reference=reference_label, samples=len(samples),
                               atol=tol.atol, rtol=tol.rtol, min_cosine=tol.min_cosine,
                               batch_sizes=batch_sizes, outputs=[mismatch], passed=False)
        for index, (ref, cand) in enumerate(zip(reference_outputs, candidate_outputs)):
            name = output_names[index] if index < len(output_names) else f"output_{index}"
            per_output.setdefault(index, []).append(compare_output(name, ref, cand, tol))
    outputs = [merge_checks(results[0].name, results) for _, results in sorted(per_output.items())]
    return ParityCheck(
        candidate=candidate_label, reference=reference_label, samples=len(samples),
        atol=tol.atol, rtol=tol.rtol, min_cosine=tol.min_cosine, batch_sizes=batch_sizes,
        outputs=outputs, passed=all(o.passed for o in outputs),
    )
