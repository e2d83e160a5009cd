"""Output comparisons shared by parity checks (export), fidelity diagnostics and task metrics (quantize)."""

from __future__ import annotations

import numpy as np


def row_cosines(ref_rows: np.ndarray, cand_rows: np.ndarray) -> np.ndarray:
    """Cosine of each row pair ([N, D] each); two all-zero rows agree (1.0), one zero row scores 0."""
    dot = np.sum(ref_rows * cand_rows, axis=1)
    ref_norm, cand_norm = np.linalg.norm(ref_rows, axis=1), np.linalg.norm(cand_rows, axis=1)
    norms = ref_norm * cand_norm
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1), 0.0)
    return np.where((ref_norm == 0) & (cand_norm == 0), 1.0, cosine)


def channel_sums(ref: np.ndarray, cand: np.ndarray) -> list[np.ndarray]:
    """Σref·cand, Σref² and Σcand² per last-axis channel: what ``worst_channel`` needs, summable over batches."""
    r, c = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, ref.shape[-1])
    return [np.sum(r * c, axis=0), np.sum(r * r, axis=0), np.sum(c * c, axis=0)]


def worst_channel(sums: list[np.ndarray] | None) -> tuple[float | None, int | None]:
    """Min cosine over the channels that carry signal, from ``channel_sums``; (None, None) if none does."""
    if sums is None:
        return None, None
    dot, energy, cand_energy = sums
    # Channels with next to no signal make noisy cosines; judge the ones that matter.
    meaningful = energy > 1e-6 * float(np.mean(energy)) if np.any(energy > 0) else np.zeros_like(energy, bool)
    if not np.any(meaningful):
        return None, None
    norms = np.sqrt(energy * cand_energy)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1), 0.0)
    cosine = np.where(meaningful, cosine, np.inf)
    worst = int(np.argmin(cosine))
    return float(cosine[worst]), worst


def has_channels(array: np.ndarray) -> bool:
    """A last axis worth judging channel by channel (2 to 4096 channels)."""
    return array.ndim >= 2 and 2 <= array.shape[-1] <= 4096


def channel_cosines(ref: np.ndarray, cand: np.ndarray) -> tuple[float | None, int | None]:
    """Min cosine over last-axis channels that carry signal; (None, None) if not applicable."""
    if not has_channels(ref):
        return None, None
    return worst_channel(channel_sums(ref, cand))
