"""Output comparisons shared by parity checks (export) and fidelity checks (quantize)."""

from __future__ import annotations

import numpy as np


def channel_cosines(ref: np.ndarray, cand: np.ndarray) -> tuple[float | None, int | None]:
    """Min cosine over last-axis channels that carry signal; (None, None) if not applicable."""
    if ref.ndim < 2 or ref.shape[-1] < 2 or ref.shape[-1] > 4096:
        return None, None
    r = ref.reshape(-1, ref.shape[-1])
    c = cand.reshape(r.shape)
    energy = np.sum(r**2, axis=0)
    # Channels with next to no signal make noisy cosines; judge the ones that matter.
    meaningful = energy > 1e-6 * float(np.mean(energy)) if np.any(energy > 0) else np.zeros_like(energy, bool)
    if not np.any(meaningful):
        return None, None
    norms = np.sqrt(energy) * np.linalg.norm(c, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, np.sum(r * c, axis=0) / np.where(norms > 0, norms, 1), 0.0)
    cosine = np.where(meaningful, cosine, np.inf)
    worst = int(np.argmin(cosine))
    return float(cosine[worst]), worst
